"""The pooling rule, in one place for every path that runs a backbone.

* ``last``: each row's last real position (so the padding side does not matter);
* ``mean``: the positions that depend on both the prompt and the text: the text for
  ``prefix`` (the prompt steers how it is read), the soft positions for ``suffix`` (they
  have read the whole text), every real position without a prompt.

A new pooling is a branch of :func:`pool` (and its name in
:data:`pe_core.model.config.POOLINGS`).

Example::

    lay = Layout(mask, k=5, placement="prefix")
    pooled = pool(hidden, lay, "mean")      # (B, d), not normalised
"""

from __future__ import annotations

import torch

from pe_core.errors import ConfigError
from pe_core.model.config import POOLINGS
from pe_core.model.layout import Layout


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real position, whatever the padding side.

    Example::

        last_index(torch.tensor([[1, 1, 0], [0, 1, 1]]))  # tensor([1, 2])
    """
    idx = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * idx).argmax(-1)


def mean_pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over dim 1 (a row with no weight gives zeros).

    Example::

        mean_pool(hidden, mask)  # (B, d)
    """
    w = weights.to(hidden.dtype).unsqueeze(-1)
    return (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)


def pool(hidden: torch.Tensor, lay: Layout, pooling: str) -> torch.Tensor:
    """Pooled (not normalised) ``(B, d)`` from the last hidden state of ``lay``.

    ``hidden`` is ``(B, T + k, d)`` for the whole sequence, or ``(B, k, d)`` for the soft
    positions alone of a suffix whose text ran before them (a key/value cache).

    Example::

        pool(model(...).last_hidden_state, Layout(mask), "last")
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    # a Python comparison of (possibly symbolic) lengths: exported graphs get no op for it
    soft_only = hidden.shape[1] != lay.text_mask.shape[1] + lay.k
    if soft_only and not (lay.ends_with_soft and hidden.shape[1] == lay.k):
        raise ValueError(
            f"hidden covers {hidden.shape[1]} of the layout's "
            f"{lay.text_mask.shape[1] + lay.k} columns: only a suffix's soft positions "
            "may be pooled alone"
        )
    if pooling == "mean":
        weights = lay.soft if lay.placement == "suffix" else lay.text
        return mean_pool(hidden, weights[:, lay.soft_columns] if soft_only else weights)
    if lay.ends_with_soft:
        return hidden[:, -1]  # a constant index: the ONNX pooled-row rewrite matches it
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_index(lay.mask)]
