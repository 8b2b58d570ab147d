"""Checks that a run can learn from its data, made before anything is written: settings
that are valid one by one but leave training nothing to learn are refused with a
:class:`DataError` that says why and what to pass, instead of a run whose loss never
moves.

Example::

    check_trainable(data, settings, world=1)
    check_max_length(embedder.tokenizer, 512, data)
"""

from __future__ import annotations

from typing import Any

from pe_core.errors import ConfigError, DataError
from pe_core.training.data import PairData, TaskBatches, check_negatives
from pe_core.training.schedule import run_steps, warmup_count

# enough rows to see whether truncation leaves texts apart, cheap to tokenize
SAMPLE = 512


def check_trainable(data: PairData, settings: Any, world: int,
                    dev: PairData | None = None) -> None:
    """Every batch needs two rows of one task (in-batch negatives); hard negatives must
    be usable as asked (:func:`~pe_core.training.data.check_negatives`); the warmup must
    end before the run does (else the learning rate never reaches its value); a dev set
    needs two or more documents (with one, every retrieval is perfect)."""
    per_epoch = len(TaskBatches(data, settings.batch_size, settings.seed, world))
    check_negatives(data, settings.hard_negatives)
    total = run_steps(settings.steps, settings.epochs, per_epoch)
    warmup = warmup_count(settings.warmup, total)
    if warmup > total:
        raise ConfigError(
            f"warmup is {warmup} steps and the run {total}: the learning rate would never "
            f"reach its value; pass a warmup of at most {total} steps, or a fraction below 1 "
            "(--warmup 0.05)"
        )
    if dev is not None and 0 < len(dev) < 2:
        raise DataError(f"{dev.source}: the dev set holds {len(dev)} record, and with one "
                        "document every retrieval is perfect: give it 2 or more records "
                        "(--dev-data, --dev-size)")


def check_max_length(tokenizer: Any, max_length: int, data: PairData) -> None:
    """Texts cut to ``max_length`` tokens must still differ: when every query, or every
    positive, becomes the same tokens (often just the tokenizer's BOS, or a first word
    the texts share), no row can be told from another and the loss stays at ln(batch).
    The least sensible length is one past the tokens all of them start with."""
    sample = data.examples[:SAMPLE]
    for side in ("query", "positive"):
        texts = list(dict.fromkeys(getattr(ex, side) for ex in sample))
        if len(texts) < 2:
            continue  # the same text throughout is the data's doing, not the length's
        ids = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        shared = _common_prefix(ids)
        if max_length <= shared:
            kept = tokenizer.decode(ids[0][:max_length])
            raise DataError(
                f"max_length {max_length} cuts every {side} of {data.source} to the same "
                f"{max_length} token(s) ({kept!r:.60}), so no row can be told from another "
                f"and the loss cannot fall below ln(batch): the first {shared} tokens of "
                f"every {side} are the same, so max_length must be at least {shared + 1}, "
                "and long enough to keep what a text says (the default is 512)"
            )


def _common_prefix(ids: list[list[int]]) -> int:
    first = ids[0]
    n = min(map(len, ids))
    for other in ids[1:]:
        n = next((i for i in range(n) if other[i] != first[i]), n)
    return n
