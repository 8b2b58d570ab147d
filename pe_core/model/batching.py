"""Tokenise once (:func:`tokenize_texts`), sort by length, batch, and put results back
in input order (sentence-transformers conventions); the one padding of token rows every path uses
(:func:`pad_rows`); and the length grouping training uses for the rows of one step
(:func:`length_groups`)."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch


def tokenize_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of user texts, with the special tokens the model adds (BOS/EOS) but
    none parsed from the text itself: a text that contains ``"</s>"`` or ``"<pad>"`` is
    read as those characters, not as an end-of-sequence or padding token that would
    change what the model sees (and where last-token pooling looks)."""
    return tokenizer(list(texts), add_special_tokens=True, truncation=False,
                     split_special_tokens=True)["input_ids"]


@dataclass
class Batch:
    order: list[int]  # positions of these rows in the caller's input
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def tokenize_sorted(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    padding_side: str = "right",
) -> Iterator[Batch]:
    """Yield padded batches, longest first; warn once if any text is truncated."""
    ids = tokenize_texts(tokenizer, texts)
    longest = max((len(x) for x in ids), default=0)
    if longest > max_length:
        n = sum(len(x) > max_length for x in ids)
        warnings.warn(
            f"{n} of {len(ids)} texts are longer than max_length={max_length} tokens "
            f"(longest {longest}) and were truncated",
            stacklevel=_caller_level(),
        )
    ids = [x[:max_length] for x in ids]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        input_ids, mask = pad_rows([ids[i] for i in rows], pad_id, padding_side)
        yield Batch(rows, input_ids, mask)


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside pe: a warning points at the user's
    ``encode`` call whichever embedder (and driver) it went through."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("pe_core.", "pe_registry.")):
        frame, level = frame.f_back, level + 1
    return level


def pad_rows(
    ids: Sequence[Sequence[int]], pad_id: int, side: str = "right", device: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows padded on ``side`` to the longest (at least 1): ``(ids, mask)``.

    Example::

        pad_rows([[5, 6], [7]], pad_id=0, side="left")  # ([[5, 6], [0, 7]], [[1, 1], [0, 1]])
    """
    width = max(1, max(len(x) for x in ids))
    out = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for r, row in enumerate(ids):
        n = len(row)
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        out[r, sl] = torch.tensor(row, dtype=torch.long)
        mask[r, sl] = 1
    return out.to(device), mask.to(device)


def encode_batches(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    padding_side: str = "right",
    show_progress_bar: bool | None = None,
) -> Iterator[Batch]:
    """:func:`tokenize_sorted` with the ``encode`` progress-bar convention: ``None``
    shows a bar for more than 8 batches. Every embedder's ``encode`` loops over this."""
    batches = tokenize_sorted(tokenizer, texts, batch_size, max_length, padding_side)
    n_batches = math.ceil(len(texts) / batch_size)
    show = n_batches > 8 if show_progress_bar is None else show_progress_bar
    if not show:
        return batches
    from tqdm.auto import tqdm

    return iter(tqdm(batches, total=n_batches, desc="encode", unit="batch"))


def length_groups(lengths: Sequence[int], call_cost: int = 48) -> list[list[int]]:
    """Split rows into groups of similar length that are cheapest to run, each padded to
    its own longest row: minimises ``sum(call_cost + rows * longest)`` over the groups of
    the length-sorted rows (exact, by dynamic programming). ``call_cost`` is one forward
    call's fixed cost in tokens (about 2 ms, or 45 tokens, for a small model on one CPU
    core). Returns lists of indices into ``lengths``.

    Example::

        length_groups([120, 12, 118, 15])  # [[1, 3], [2, 0]]
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    # cuts only ever pay between different lengths: run the search over distinct lengths
    ends = [j + 1 for j in range(len(order))
            if j + 1 == len(order) or lengths[order[j + 1]] != lengths[order[j]]]
    best = [0] * (len(ends) + 1)  # best[e]: cheapest cost of the rows up to ends[e - 1]
    cut = [0] * (len(ends) + 1)
    for e in range(1, len(ends) + 1):
        longest = lengths[order[ends[e - 1] - 1]]
        best[e], cut[e] = min(
            (best[c] + call_cost + (ends[e - 1] - (ends[c - 1] if c else 0)) * longest, c)
            for c in range(e)
        )
    groups, e = [], len(ends)
    while e > 0:
        start = ends[cut[e] - 1] if cut[e] else 0
        groups.append(order[start : ends[e - 1]])
        e = cut[e]
    return groups[::-1]
