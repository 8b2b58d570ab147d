"""Attention for the training soft pass that sends gradients to the soft positions only.

In the suffix soft pass (:func:`pe_core.training.kvcache.soft_pass`) the K soft queries
attend over ``[cached text keys ; their own keys]``. The cache appends the new keys to
the text's, so autograd sees one key tensor that requires grad and the stock kernels
compute a key/value gradient for every text position (and, for grouped-query attention,
copy it back out of the repeated heads). Nothing trainable depends on the text
positions, so that work is thrown away: on the default qwen (batch of 96 texts of up to
128 tokens) it was about half of the soft pass's forward + backward time.

:func:`new_keys_only` swaps in :func:`suffix_attention` for one forward of the model. It
computes the same attention (grouped-query heads without copies, the model's mask,
softcap and scaling), with the text's keys/values detached, so only the soft positions'
keys/values get gradients. Outside training (no grad), or for anything it does not
cover, the model's own attention runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch

NAME = "pe_suffix_training"  # registered as NAME_sdpa and NAME_eager
_PLAIN = ("sdpa", "eager")
_original: contextvars.ContextVar[Callable[..., Any] | None] = contextvars.ContextVar(
    "pe_suffix_original", default=None
)


def _registry() -> tuple[Any, Any] | None:
    """transformers' attention and mask registries (None: a version without them)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:  # pragma: no cover - transformers older than the layered API
        return None
    return AttentionInterface, AttentionMaskInterface


def _fallback(name: str, attention: Any) -> Callable[..., Any]:
    """The model's own attention, for calls :func:`suffix_attention` does not cover.
    transformers keeps ``eager`` out of its registry: each modeling file has its own."""
    return _models_eager if name == "eager" else attention._global_mapping[name]


def _models_eager(module: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
    """The ``eager_attention_forward`` of the modeling file that defines ``module``'s
    class (dropout, sinks and softcap as the model does them)."""
    modeling = sys.modules.get(type(module).__module__)
    eager = getattr(modeling, "eager_attention_forward", None)
    if eager is None:
        raise NotImplementedError(
            f"{type(module).__qualname__} comes from {type(module).__module__!r}, which has "
            "no eager_attention_forward; use attn_implementation='sdpa' for training")
    return eager(module, *args, **kwargs)


@contextlib.contextmanager
def new_keys_only(model: Any) -> Iterator[None]:
    """Within, ``model``'s attention (``sdpa`` or ``eager``) back-propagates into the
    newest ``query_length`` keys/values only; the mask is the one transformers builds
    for that implementation (boolean for sdpa, additive for eager). A no-op without grad
    or for other attention implementations (flash, flex: their own kernels are kept)."""
    registry = _registry()
    config = model.config
    name = getattr(config, "_attn_implementation", None)
    if not torch.is_grad_enabled() or registry is None or name not in _PLAIN:
        yield
        return
    attention, masks = registry
    swapped = f"{NAME}_{name}"  # one per implementation: each keeps its own mask
    if swapped not in attention._global_mapping:
        attention.register(swapped, suffix_attention)
        masks.register(swapped, masks._global_mapping[name])
    token = _original.set(_fallback(name, attention))
    config._attn_implementation = swapped
    try:
        yield
    finally:
        config._attn_implementation = name
        _original.reset(token)


def suffix_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: ``query (B, H, q, D)``, ``key/value
    (B, H_kv, T, D)``; returns ``(B, q, H, D)``. The last ``q`` keys are the queries' own
    (the cache appended them); the ``T - q`` before them get no gradient."""
    q, t = query.shape[2], key.shape[2]
    unusual = dropout or kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None
    if unusual or q >= t or query.shape[1] % key.shape[1]:
        original = _original.get()
        assert original is not None  # only reachable inside new_keys_only
        return original(module, query, key, value, attention_mask, dropout=dropout,
                        scaling=scaling, softcap=softcap, **kwargs)
    return _attend(query, key, value, attention_mask, split=t - q,
                   scaling=scaling, softcap=softcap), None


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    split: int,
    scaling: float | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    """Grouped-query attention in plain ops; keys/values before ``split`` (> 0) detached."""
    b, h, q, d = query.shape
    h_kv, t = key.shape[1], key.shape[2]
    # head j of the query uses key head j // (h / h_kv), as transformers' repeat_kv does
    grouped = query.reshape(b, h_kv, h // h_kv * q, d)
    scale = d**-0.5 if scaling is None else scaling
    # two products, so that autograd has no key/value gradient to form for the text
    text_k, text_v = key[:, :, :split].detach(), value[:, :, :split].detach()
    new_k, new_v = key[:, :, split:], value[:, :, split:]
    scores = torch.cat([grouped @ text_k.transpose(-1, -2), grouped @ new_k.transpose(-1, -2)],
                       dim=-1) * scale
    scores = scores.view(b, h_kv, h // h_kv, q, t)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is None and q > 1:  # none given: the text all visible, causal among the new
        mask = torch.ones(q, t, dtype=torch.bool, device=scores.device)
        mask[:, t - q :] = mask[:, t - q :].tril()
        mask = mask[None, None]
    if mask is not None:
        mask = mask[:, :, :, :t].unsqueeze(2)  # (B, 1, 1, q, T) over the head groups
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = probs.view(b, h_kv, h // h_kv * q, t)
    out = probs[..., :split] @ text_v + probs[..., split:] @ new_v
    return out.view(b, h, q, d).transpose(1, 2).contiguous()
