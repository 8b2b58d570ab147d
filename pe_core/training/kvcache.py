"""The suffix fast path for training: the text's keys/values without grad, then only the
K soft positions with grad.

Three savings on top of :meth:`BackboneEncoder.text_cache` and
:meth:`BackboneEncoder.soft_pass`, all exact:

* **Early exit.** Nothing trainable depends on the text positions' outputs of the last
  layer (the soft positions only read that layer's keys/values), so the text pass stops
  as soon as the last layer has written its keys/values into the cache: that layer's
  attention, output projection and MLP over the text are never computed.
* **Length groups.** A training batch mixes short queries with long documents; padded
  to one width, about half of the text pass is padding (measured on the demo corpus:
  47 % of a batch's padded positions). The store runs the texts it has not seen in
  groups of similar length (:func:`pe_core.model.batching.length_groups`), each padded only to
  its own longest.
* **A store across epochs.** The backbone is frozen and in eval mode, so a text's
  keys/values are a pure function of its tokens; :class:`TextKVStore` keeps them (on the
  CPU, within a byte budget) and later epochs only run the K soft positions.

Both keep the cache the model itself would build. Sliding-window layers (Mistral,
Gemma 2/3) drop old keys once a text outgrows the window; texts that long are not stored.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from pe_core.model.batching import length_groups
from pe_core.model.encoder import BackboneEncoder
from pe_core.model.layout import align_text
from pe_core.training.suffix_attention import new_keys_only


class _StopAfterLastKV(Exception):
    """Raised from the cache once the last layer's keys/values are in."""


def _new_cache(model: Any, data: Any = None) -> Any | None:
    """The DynamicCache the model would build for itself (optionally pre-filled with
    ``data``: per-layer ``(keys, values)``), or None where its layers are of a kind this
    module does not know (shared layers, another transformers API)."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:  # pragma: no cover - transformers without the layered cache
        return None
    try:
        cache = DynamicCache(data, config=model.config)
    except TypeError:  # pragma: no cover - a different constructor signature
        return None
    layers = getattr(cache, "layers", None)
    n = getattr(model.config.get_text_config(decoder=True), "num_hidden_layers", None)
    known = (DynamicLayer, DynamicSlidingWindowLayer)
    if not layers or len(layers) != n or any(type(x) not in known for x in layers):
        return None
    return cache


def _window(cache: Any) -> int | None:
    """The smallest sliding window among the cache's layers (None: all full attention)."""
    sizes = [x.sliding_window for x in cache.layers if hasattr(x, "sliding_window")]
    return min(sizes) if sizes else None


@torch.no_grad()
def text_cache(
    backbone: BackboneEncoder, ids: torch.Tensor, mask: torch.Tensor, bf16: bool = False
) -> Any:
    """:meth:`BackboneEncoder.text_cache`, skipping the last layer's work that only the
    text positions' outputs would need.

    ``bf16``: run the pass under bf16 autocast and hand back keys/values in the model's
    own dtype. The backbone is frozen and this pass has no grad, so only the rounding of
    the keys/values reaches training (docs/benchmarks/train-efficiency.md, the text pass's
    precision).
    """
    if bf16:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16):
            cache = text_cache(backbone, ids, mask)
        dtype = next(backbone.model.parameters()).dtype
        for layer in getattr(cache, "layers", ()):
            layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
        return cache
    cache = _new_cache(backbone.model)
    if cache is None:  # plain path: the model builds its own cache
        return backbone.text_cache(ids, mask)
    last = len(cache.layers) - 1
    update = cache.update

    def update_then_stop(key: Any, value: Any, layer_idx: int, *args: Any, **kw: Any) -> Any:
        out = update(key, value, layer_idx, *args, **kw)
        if layer_idx == last:
            raise _StopAfterLastKV
        return out

    cache.update = update_then_stop  # instance attribute: this cache only
    try:
        backbone.text_cache(ids, mask, cache)
    except _StopAfterLastKV:
        pass
    finally:
        del cache.update
    return cache


def soft_pass(
    backbone: BackboneEncoder,
    cache: Any,
    mask: torch.Tensor,
    soft: torch.Tensor,
    pooling: str = "last",
) -> torch.Tensor:
    """:meth:`BackboneEncoder.soft_pass` with gradients to the soft positions' keys and
    values only; pooled (not normalised) ``(B, d_B)``. The cache is extended in place:
    use it once."""
    with new_keys_only(backbone.model):
        return backbone.soft_pass(cache, mask, soft, pooling)


def row_key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
    """Identity of one text: its real tokens (padding side and width do not matter)."""
    real = ids[mask.bool()].to("cpu", torch.int64).numpy().tobytes()
    return hashlib.blake2b(real, digest_size=16).digest()


class TextKVStore:
    """Per-text keys/values kept across steps and epochs, within ``max_bytes``.

    Example::

        store = TextKVStore(max_bytes=2 << 30)
        cache = store.cache(backbone, ids, mask)   # computes what it has not seen
        pooled = soft_pass(backbone, cache, mask, soft)
    """

    def __init__(
        self, max_bytes: int, device: str | torch.device = "cpu", call_cost: int = 48,
        bf16: bool = False,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.bf16 = bf16  # the text pass under bf16 autocast (see text_cache)
        self.call_cost = call_cost  # see length_groups
        self.device = torch.device(device)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._rows: dict[bytes, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.supported: bool | None = None
        self.window: int | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def cache(self, backbone: BackboneEncoder, ids: torch.Tensor, mask: torch.Tensor) -> Any:
        """A cache for the batch, computing (and storing) only the rows not yet stored."""
        ids, mask = align_text(ids, mask, to_end=True)  # as the suffix layout places text
        if self.supported is None:
            probe = _new_cache(backbone.model)
            self.supported = probe is not None
            self.window = None if probe is None else _window(probe)
        too_long = self.window is not None and mask.shape[1] >= self.window - 1
        if not self.supported or self.max_bytes <= 0 or too_long:
            return text_cache(backbone, ids, mask, self.bf16)
        keys = [row_key(ids[i], mask[i]) for i in range(len(ids))]
        missing = [i for i, key in enumerate(keys) if key not in self._rows]
        self.hits += len(ids) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        lengths = mask.sum(-1).tolist()
        for group in length_groups([lengths[i] for i in missing], self.call_cost):
            rows = [missing[g] for g in group]
            sub_ids, sub_mask = _trim(ids[rows], mask[rows])
            computed = text_cache(backbone, sub_ids, sub_mask, self.bf16)
            for j, i in enumerate(rows):
                fresh[i] = _row_kv(computed, j, sub_mask[j])
                self._maybe_store(keys[i], fresh[i])
        batch = [fresh[i] if i in fresh else self._rows[keys[i]] for i in range(len(ids))]
        return self._assemble(backbone, batch, mask)

    def _maybe_store(self, key: bytes, rows: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in rows)
        if self.bytes + size > self.max_bytes:
            return
        # a contiguous copy: a view would keep the whole batch's tensor alive
        self._rows[key] = [(_own(k, self.device), _own(v, self.device)) for k, v in rows]
        self.bytes += size

    def _assemble(self, backbone: BackboneEncoder, rows: list[Any], mask: torch.Tensor) -> Any:
        width, device = mask.shape[1], mask.device
        # where each row's real positions go in the (B * W) slots (either padding side);
        # padded slots are zeroed (the attention mask hides them, but must not meet NaN)
        flags = mask.reshape(-1).bool()
        slots, padded = flags.nonzero().squeeze(1), (~flags).nonzero().squeeze(1)
        layers = []
        for layer in range(len(rows[0])):
            pair = []
            for j in (0, 1):
                flat = torch.cat([row[layer][j] for row in rows]).to(device)  # (sum L, H, D)
                out = flat.new_empty((len(rows) * width, *flat.shape[1:]))
                out.index_copy_(0, slots, flat).index_fill_(0, padded, 0.0)
                pair.append(out.view(len(rows), width, *flat.shape[1:]).transpose(1, 2))
            layers.append((pair[0], pair[1]))
        cache = _new_cache(backbone.model, layers)
        if cache is None:  # pragma: no cover - supported was checked above
            raise RuntimeError("could not rebuild a key/value cache")
        return cache


def _own(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t.to(device).clone(memory_format=torch.contiguous_format)


def _trim(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop columns that are padding in every row of a sub-batch (either side)."""
    used = mask.bool().any(0)
    return ids[:, used], mask[:, used]


def _row_kv(
    cache: Any, row: int, row_mask: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row ``row``'s keys/values for every layer, real positions only, laid out
    ``(positions, heads, head_dim)`` so a batch's rows concatenate into place."""
    keep = row_mask.bool()
    return [(layer.keys[row][:, keep].transpose(0, 1), layer.values[row][:, keep].transpose(0, 1))
            for layer in cache.layers]
