"""Training, GradCache, the suffix fast path and the other ways to compute the same step
(pe_core.training.gradcache, kvcache). Tiny models, tiny data."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import (
    tiny_examples,
    tiny_method,
    train_tiny,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# -- GradCache --------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["suffix", "prefix"])
def test_grad_cache_equals_uncached_gradient(llama_spec, placement):
    """Gumbel noise on (tau < 1, a seed): the chunked step reproduces the plain step."""
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.methods import StepInfo

    results = []
    for chunk in (0, 5):
        method = tiny_method(llama_spec, placement)
        rows = method.rows(tiny_examples(6), 1)
        loss = contrastive_step(method, rows, StepInfo(0, tau=0.7, noise_seed=11), 0.05, chunk)
        grads = {n: p.grad.clone() for n, p in method.named_trainable().items()}
        results.append((loss, grads))
        assert all(p.grad is None for p in method.backbone.parameters())
    (loss0, g0), (loss1, g1) = results
    assert loss0 == pytest.approx(loss1, rel=1e-5)
    for name in g0:
        scale = g0[name].abs().max().clamp(min=1e-12)
        assert ((g0[name] - g1[name]).abs().max() / scale) < 1e-4, name


def test_lora_baseline_length_groups_keep_row_order(tiny_folders):
    """The LoRA baseline runs rows in groups of similar length; each row's embedding is
    the one it gets alone, in the order asked for."""
    from pe_core.plugins import get_backbone
    from pe_core.training.lora_baseline import LoraMethod, build_lora_embedder
    from pe_core.training.settings import TrainSettings

    s = TrainSettings(method="lora", lora_dropout=0.0)
    method = LoraMethod(build_lora_embedder(get_backbone("llama"), Path(tiny_folders["model"]),
                                            s), s)
    rows = method.rows(tiny_examples(6), 1)
    assert len({len(x) for x in rows.ids}) > 2  # queries and documents of several lengths
    index = [5, 0, 13, 7, 2, 16, 9]
    with torch.no_grad():
        together = method.encode(rows, index, None)
        alone = torch.cat([method.encode(rows, [r], None) for r in index])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_grad_cache_lora_baseline(tiny_folders):
    from pe_core.plugins import get_backbone
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.lora_baseline import LoraMethod, build_lora_embedder
    from pe_core.training.methods import StepInfo
    from pe_core.training.settings import TrainSettings

    grads = []
    for chunk in (0, 4):
        torch.manual_seed(0)
        s = TrainSettings(method="lora", lora_dropout=0.0)
        emb = build_lora_embedder(get_backbone("llama"), Path(tiny_folders["model"]), s)
        method = LoraMethod(emb, s)
        rows = method.rows(tiny_examples(5), 1)
        contrastive_step(method, rows, StepInfo(0), 0.05, chunk)
        grads.append({n: p.grad.clone() for n, p in method.named_trainable().items()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def _suffix_inputs(method):
    """Three texts of different lengths, padded, and a random soft prompt per row."""
    enc = method.embedder.tokenizer(
        ["alpha beta gamma", "fox", "open a file and read the list of values"],
        return_tensors="pt", padding=True,
    )
    backbone = method.backbone
    soft = torch.randn(3, 5, backbone.d) * backbone.embedding_table.std()
    return enc["input_ids"], enc["attention_mask"], soft


def test_suffix_fast_path_is_exact(llama_spec):
    """Early exit after the last layer's keys/values, and the store across epochs, give
    what the encoder's own suffix path gives."""
    from pe_core.training.kvcache import TextKVStore, soft_pass, text_cache

    method = tiny_method(llama_spec)
    backbone = method.backbone
    ids, mask, soft = _suffix_inputs(method)
    ref = backbone(ids, mask, soft, "suffix", "last")
    fast = soft_pass(backbone, text_cache(backbone, ids, mask), mask, soft)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    store = TextKVStore(1 << 26)
    soft_pass(backbone, store.cache(backbone, ids[:2], mask[:2]), mask[:2], soft[:2])
    again = soft_pass(backbone, store.cache(backbone, ids, mask), mask, soft)
    assert (store.hits, store.misses, len(store)) == (2, 3, 3)
    torch.testing.assert_close(again, ref, atol=1e-5, rtol=0)
    # free calls: every length its own group, each padded to its own width
    grouped = TextKVStore(1 << 26, call_cost=0)
    torch.testing.assert_close(
        soft_pass(backbone, grouped.cache(backbone, ids, mask), mask, soft), ref,
        atol=1e-5, rtol=0,
    )


def test_bf16_text_pass_hands_back_fp32_keys_close_to_the_exact_pass(llama_spec):
    """``text_pass_bf16``: the frozen text pass runs under bf16 autocast (its keys/values
    do differ from fp32's), comes back in fp32 and stays within bf16's rounding of the
    exact suffix path, through the store and the method alike."""
    from pe_core.training.kvcache import TextKVStore, soft_pass, text_cache
    from pe_core.training.methods import StepInfo

    method = tiny_method(llama_spec, text_kv_cache_mb=0.0)
    backbone = method.backbone
    ids, mask, soft = _suffix_inputs(method)
    exact, cheap = text_cache(backbone, ids, mask), text_cache(backbone, ids, mask, bf16=True)
    gaps = []
    for a, b in zip(cheap.layers, exact.layers, strict=True):
        assert a.keys.dtype == a.values.dtype == b.keys.dtype == torch.float32
        scale = b.keys.abs().max()
        gaps.append(float((a.keys - b.keys).abs().max() / scale))
    # bf16 keeps 8 significant bits (0.4 % per rounding); two layers of them, with margin
    assert max(gaps) < 5e-2
    assert max(gaps) > 1e-5  # the pass did run in bf16
    ref = backbone(ids, mask, soft, "suffix", "last")
    tol = dict(atol=5e-2 * float(ref.abs().max()), rtol=0)
    torch.testing.assert_close(soft_pass(backbone, cheap, mask, soft), ref, **tol)
    store = TextKVStore(1 << 26, bf16=True)
    torch.testing.assert_close(soft_pass(backbone, store.cache(backbone, ids, mask), mask, soft),
                               ref, **tol)
    assert tiny_method(llama_spec, text_pass_bf16=True).store.bf16 is True
    rows = method.rows(tiny_examples(4), 1)
    head = method.head(rows, StepInfo(0, noise_seed=0)).detach()
    index = list(range(len(rows)))
    fp32 = method.encode(rows, index, head)
    method.settings.text_pass_bf16 = True
    bf16 = method.encode(rows, index, head)
    torch.testing.assert_close(bf16, fp32, atol=5e-2, rtol=0)  # unit vectors
    assert float((bf16 - fp32).abs().max()) > 1e-6


def test_length_groups_are_the_cheapest_split():
    """The dynamic programme finds the cheapest grouping (checked against every split of
    the sorted rows) and returns each row once."""
    import itertools

    from pe_core.model.batching import length_groups

    def cost(groups, lengths, call):
        return sum(call + len(g) * max(lengths[i] for i in g) for g in groups)

    rng = random.Random(0)
    for _ in range(60):
        lengths = [rng.choice([3, 5, 8, 40, 41, 120]) for _ in range(rng.randint(1, 9))]
        call = rng.choice([0, 10, 48, 500])
        groups = length_groups(lengths, call)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(
            cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)), strict=True)],
                 lengths, call)
            for r in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), r)
        )
        assert cost(groups, lengths, call) == best
    assert length_groups([]) == []
    assert length_groups([120, 12, 118, 15]) == [[1, 3], [2, 0]]


def test_gradient_checkpointing_prefix_same_gradient(llama_spec):
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.methods import StepInfo

    grads = []
    for ckpt in (False, True):
        method = tiny_method(llama_spec, "prefix", gradient_checkpointing=ckpt)
        contrastive_step(method, method.rows(tiny_examples(4), 1), StepInfo(0, noise_seed=1), 0.05)
        grads.append(method.embedder.alignment.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_bf16_autocast_step(pairs, tiny_folders, tmp_path):
    result = train_tiny(pairs, tiny_folders, tmp_path / "run", steps=1, bf16=True)
    assert np.isfinite(result.loss)


@pytest.mark.parametrize("setting", [None, True, False])
def test_deterministic_kernels_inside_the_loop_only(pairs, tiny_folders, tmp_path,
                                                      monkeypatch, setting):
    """On CPU by default; the caller's choice comes back after training."""
    from pe_core.training.trainer import Trainer

    seen: list = []
    plain = Trainer._one_step

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return plain(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_one_step", spy)
    kw = {} if setting is None else {"deterministic": setting}
    assert not torch.are_deterministic_algorithms_enabled()
    train_tiny(pairs, tiny_folders, tmp_path / "run", steps=2, eval_every=0, **kw)
    assert seen == [setting is not False] * 2
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_kernels_default_off_on_cuda_and_restore():
    from pe_core.training.trainer import deterministic_kernels

    with deterministic_kernels(None, torch.device("cuda")):  # no CUDA needed: nothing runs
        assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with deterministic_kernels(False, torch.device("cpu")):
            assert torch.are_deterministic_algorithms_enabled()  # False: left as it was
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
