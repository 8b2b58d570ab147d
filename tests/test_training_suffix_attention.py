"""Training, the soft pass's attention (pe_core.training.suffix_attention). Tiny models, tiny
data."""

from __future__ import annotations

import contextlib

import pytest
import torch
from training_helpers import (
    tiny_method,
)

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the soft pass's attention ---------------------------------------------------------
def _attention_inputs(q=5, t=12, seed=0, padded=True):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(3, 6, q, 8, generator=gen, requires_grad=True)
    key = torch.randn(3, 2, t, 8, generator=gen, requires_grad=True)
    value = torch.randn(3, 2, t, 8, generator=gen, requires_grad=True)
    allowed = torch.ones(3, 1, q, t, dtype=torch.bool)
    allowed[..., t - q :] = torch.ones(q, q, dtype=torch.bool).tril()
    if padded:
        allowed[0, :, :, :3] = False  # a padded row
    return query, key, value, allowed


def _reference_attention(query, key, value, allowed, scaling, softcap=None):
    """transformers' eager attention, written out: repeat the key/value heads."""
    rep = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scores = query @ k.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return (scores.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_suffix_attention_matches_eager(mask_kind, softcap):
    """Same output and query gradient as the eager formula; the text's keys/values get
    no gradient, the soft positions' get the eager one."""
    from pe_core.training.suffix_attention import suffix_attention

    query, key, value, allowed = _attention_inputs()
    t, q = key.shape[2], query.shape[2]
    if mask_kind == "none":  # what transformers passes when nothing needs masking
        allowed = torch.ones_like(allowed)
        allowed[..., t - q :] = torch.ones(q, q, dtype=torch.bool).tril()
    mask = {"bool": allowed, "none": None,
            "additive": torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)}[mask_kind]
    ref = _reference_attention(query, key, value, allowed, 0.3, softcap)
    out, _ = suffix_attention(None, query, key, value, mask, scaling=0.3, softcap=softcap)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    g_ref = torch.autograd.grad((ref * probe).sum(), [query, key, value])
    g_out = torch.autograd.grad((out * probe).sum(), [query, key, value])
    torch.testing.assert_close(g_out[0], g_ref[0], atol=1e-5, rtol=0)
    for mine, theirs in zip(g_out[1:], g_ref[1:], strict=True):
        assert mine[:, :, : t - q].abs().max() == 0  # the text: no gradient at all
        torch.testing.assert_close(mine[:, :, t - q :], theirs[:, :, t - q :], atol=1e-5,
                                   rtol=0)


def test_new_keys_only_swaps_for_one_pass_and_restores(llama_spec):
    """Inside, the model runs pe's attention (only with grad); after, even after an
    error, its own implementation is back."""
    from pe_core.training.suffix_attention import NAME, new_keys_only

    model = tiny_method(llama_spec).backbone.model
    before = model.config._attn_implementation
    with new_keys_only(model):
        assert model.config._attn_implementation == f"{NAME}_{before}"
    assert model.config._attn_implementation == before
    with torch.no_grad(), new_keys_only(model):
        assert model.config._attn_implementation == before  # nothing to save without grad
    with pytest.raises(RuntimeError, match="boom"), new_keys_only(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == before


def test_suffix_attention_falls_back_to_the_models_own(llama_spec):
    """Calls it does not cover (dropout, no text before the queries) go to the model's
    own attention."""
    from pe_core.training.suffix_attention import new_keys_only, suffix_attention

    query, key, value, allowed = _attention_inputs(q=4, t=4, padded=False)

    class Module:
        num_key_value_groups, is_causal, training = 3, True, False

    model = tiny_method(llama_spec).backbone.model
    with new_keys_only(model):
        out, _ = suffix_attention(Module(), query, key, value, allowed, scaling=0.3)
    ref = _reference_attention(query, key, value, allowed, 0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    g = torch.autograd.grad(out.sum(), key)[0]
    assert g.abs().max() > 0  # the model's attention: every key gets its gradient


def test_eager_fallback_is_the_modeling_files_own(llama_spec):
    """For an ``eager`` model the fallback is the modeling file's eager_attention_forward,
    dropout included, not a formula of pe's own; a module from a file without one gets a
    clear error."""
    from transformers.models.llama import modeling_llama

    from pe_core.training.suffix_attention import new_keys_only, suffix_attention

    query, key, value, allowed = _attention_inputs(q=4, t=4, padded=False)
    model = tiny_method(llama_spec).backbone.model
    model.config._attn_implementation = "eager"
    attention = next(m for m in model.modules() if type(m).__name__ == "LlamaAttention")
    attention.num_key_value_groups = 3
    attention.train()
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with new_keys_only(model):
        torch.manual_seed(5)
        out, _ = suffix_attention(attention, query, key, value, mask, dropout=0.5,
                                  scaling=0.3)
    torch.manual_seed(5)
    ref, _ = modeling_llama.eager_attention_forward(attention, query, key, value, mask,
                                                    dropout=0.5, scaling=0.3)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    no_dropout = _reference_attention(query, key, value, allowed, 0.3)
    assert (out - no_dropout).abs().max() > 0.1  # dropout was applied, as the model does

    class Stranger:  # defined here, in a file with no eager_attention_forward
        training = False

    with new_keys_only(model), pytest.raises(NotImplementedError, match="sdpa"):
        suffix_attention(Stranger(), query, key, value, mask, dropout=0.5, scaling=0.3)


def test_eager_model_fallback_gets_the_eager_mask(llama_spec):
    """An ``eager`` model whose soft pass falls back to its own attention (dropout here)
    gets the mask transformers builds for eager (additive), so the padded text stays
    hidden: the pass equals the model's own, under the same dropout draws."""
    from pe_core.training.kvcache import text_cache
    from pe_core.training.suffix_attention import new_keys_only

    method = tiny_method(llama_spec)
    backbone = method.backbone
    model = backbone.model
    model.config._attn_implementation = "eager"
    for m in model.modules():
        if type(m).__name__ == "LlamaAttention":
            m.attention_dropout = 0.3
    model.train()
    ids, mask = method._pad(method._tokenize(["a short text", "a rather longer text " * 6]))
    assert not mask.all()  # one row is padded
    u = torch.randn(2, 3, backbone.embedding_table.shape[1], generator=torch.Generator()
                    .manual_seed(0), requires_grad=True)
    full = torch.cat([mask, mask.new_ones(2, 3)], dim=1)
    pos = mask.sum(-1, keepdim=True) + torch.arange(3)
    outs = []
    for swapped in (True, False):
        torch.manual_seed(3)  # the same dropout draws, text pass included
        cache = text_cache(backbone, ids, mask)
        with new_keys_only(model) if swapped else contextlib.nullcontext():
            outs.append(model(inputs_embeds=u, attention_mask=full, position_ids=pos,
                              past_key_values=cache, use_cache=True).last_hidden_state)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
