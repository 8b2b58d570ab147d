"""Where the text and the soft prompt sit in the sequence the backbone reads.

``prefix`` is ``[soft ; text ; pad]``, ``suffix`` is ``[pad ; text ; soft]``, and no
placement is the text alone (padded on either side). Whatever side the batch was padded
on, each row's text is moved (:func:`align_text`) to touch the soft positions: a
sliding-window attention (Gemma 3, Mistral) measures distance in *columns*, so padding
between the text and the soft prompt would hide text the window should see (a short row
beside a 576-token one loses all its text on Gemma 3's 512-token window).

Every path that runs a backbone (the torch encoder, training's suffix fast path, the LoRA
baseline, the ONNX graph, the Prompting LLM's positions) builds its inputs from a
:class:`Layout`, and pools with :func:`pe_core.model.pooling.pool`, so a new placement is a
change to :meth:`Layout._order` (and its name in :data:`pe_core.model.config.PLACEMENTS`).

Example::

    lay = Layout(mask, k=5, placement="suffix")
    hidden = model(inputs_embeds=lay.join(text, soft), attention_mask=lay.mask,
                   position_ids=lay.positions).last_hidden_state
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from pe_core.errors import ConfigError
from pe_core.model.config import PLACEMENTS


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding on either side: ``cumsum(mask) - 1``.

    Example::

        positions(torch.tensor([[0, 1, 1]]))  # tensor([[0, 0, 1]])
    """
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def text_shift(mask: torch.Tensor, to_end: bool) -> torch.Tensor:
    """Per-row gather index ``(B, T)`` that moves each row's real positions to the end
    (``to_end``) or the start of the ``T`` columns, keeping their order.

    Example::

        text_shift(torch.tensor([[1, 1, 0]]), to_end=True)  # tensor([[2, 0, 1]])
    """
    real = mask.long()
    cols = torch.arange(mask.shape[1], device=mask.device)
    # the width as a tensor, not a Python int: an exported graph keeps it dynamic
    width = torch.ones_like(real[:1]).sum(-1, keepdim=True)
    # first real column (argmax takes the first maximum), or one past the last one
    anchor = (real * cols).argmax(-1) + 1 if to_end else real.argmax(-1)
    return torch.remainder(cols[None, :] + anchor[:, None], width)


def align_text(x: torch.Tensor, mask: torch.Tensor, to_end: bool) -> tuple[torch.Tensor,
                                                                           torch.Tensor]:
    """``x`` (``(B, T)`` ids or ``(B, T, d)`` embeddings) and ``mask`` with every row's
    real positions moved to the end or the start (see :func:`text_shift`).

    Example::

        ids, mask = align_text(ids, mask, to_end=True)   # now padded on the left
    """
    index = text_shift(mask, to_end)
    moved = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, moved), mask.gather(1, index)


@dataclass(frozen=True)
class Layout:
    """One batch's sequence: the text's mask ``(B, T)`` (either padding side) and ``k``
    soft positions placed by ``placement`` (None with ``k == 0``: the text alone).

    The masks are ``(B, T + k)`` in sequence order, built once on first use by ``torch``
    ops from ``text_mask`` alone, so an exported graph keeps its batch and length dynamic.

    Example::

        lay = Layout(torch.tensor([[1, 1, 0]]), k=2, placement="suffix")
        lay.mask       # tensor([[0, 1, 1, 1, 1]]): the text moved against the prompt
        lay.positions  # tensor([[0, 0, 1, 2, 3]])
    """

    text_mask: torch.Tensor
    k: int = 0
    placement: str | None = None

    def __post_init__(self) -> None:
        if (self.placement is None) != (self.k == 0):
            raise ConfigError(
                f"a layout with {self.k} soft positions needs a placement, and one without "
                f"needs none; got placement={self.placement!r}"
            )
        if self.placement is not None and self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")

    @property
    def _to_end(self) -> bool | None:
        """Where the text must sit: against a suffix (end), after a prefix (start)."""
        return None if self.placement is None else self.placement == "suffix"

    @cached_property
    def text_columns(self) -> torch.Tensor:
        """The text's mask as it sits in the sequence (moved against the soft prompt)."""
        if self._to_end is None:
            return self.text_mask
        return self.text_mask.gather(1, text_shift(self.text_mask, self._to_end))

    def align(self, text: torch.Tensor) -> torch.Tensor:
        """The text's ids or embeddings moved as :attr:`text_columns` says."""
        if self._to_end is None:
            return text
        return align_text(text, self.text_mask, self._to_end)[0]

    def _order(self, text: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        """``text`` and ``soft`` (same trailing shape) in sequence order along dim 1."""
        if soft is None or self.placement is None:
            return text
        if self.placement == "prefix":
            return torch.cat([soft, text], dim=1)
        return torch.cat([text, soft], dim=1)

    def _soft_ones(self) -> torch.Tensor:
        # expanded from the mask, not sized by Python ints: the batch stays symbolic
        return torch.ones_like(self.text_mask[:, :1]).expand(-1, self.k)

    def join(self, text: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        """The ``inputs_embeds``: text ``(B, T, d)`` (moved against the prompt) and soft
        ``(B, k, d)`` in order."""
        return self._order(self.align(text), soft)

    @cached_property
    def mask(self) -> torch.Tensor:
        """The attention mask: every real text position and every soft position."""
        return self._order(self.text_columns, self._soft_ones())

    @cached_property
    def text(self) -> torch.Tensor:
        """1 at the text's real positions only."""
        return self._order(self.text_columns, torch.zeros_like(self._soft_ones()))

    @cached_property
    def soft(self) -> torch.Tensor:
        """1 at the soft positions only."""
        return self._order(torch.zeros_like(self.text_mask), self._soft_ones())

    @cached_property
    def positions(self) -> torch.Tensor:
        """Position ids: each row counts its own real positions, padding skipped, so a
        suffix's soft tokens sit at ``text length + arange(k)`` on either padding side."""
        return positions(self.mask)

    @property
    def ends_with_soft(self) -> bool:
        """Whether every row's last real position is the sequence's last column."""
        return self.placement == "suffix"

    @property
    def soft_columns(self) -> slice:
        """The columns of the soft positions."""
        if self.placement == "prefix":
            return slice(0, self.k)
        return slice(self.text_mask.shape[1], None) if self.k else slice(0, 0)
