"""Training pairs: JSONL records or a ``datasets.Dataset`` -> validated examples, and
batches that each come from one task.

A record is ``{"query": str, "positive": str, "negatives"?: [str, ...],
"instruction"?: str | null, "task"?: str}``. Other keys are ignored (datasets often carry
ids). A record's task is its ``task`` field, else its instruction: batches never mix
tasks, so in-batch negatives come from the same task as the query.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_core.errors import DataError

REQUIRED = ("query", "positive")


@dataclass(frozen=True)
class Example:
    """One training row. ``task`` groups rows that may share a batch."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str | None = None
    task: str = ""


@dataclass
class PairData:
    """Validated training examples plus the hash recorded in ``pe_config.json``.

    Example::

        data = read_pairs("pairs.jsonl")
        train, dev = data.split_dev(64)
    """

    examples: list[Example]
    data_hash: str
    source: str = "<records>"

    def __len__(self) -> int:
        return len(self.examples)

    def tasks(self) -> dict[str, list[int]]:
        """Task name -> example indices, in file order."""
        out: dict[str, list[int]] = {}
        for i, ex in enumerate(self.examples):
            out.setdefault(ex.task, []).append(i)
        return out

    def split_dev(self, size: int, seed: int = 0) -> tuple[PairData, PairData]:
        """Hold out ``size`` examples (chosen by a seeded shuffle) as a dev set."""
        if size <= 0:
            return self, PairData([], self.data_hash, self.source)
        if size >= len(self.examples) - 1:
            raise DataError(
                f"cannot hold out {size} dev examples from {len(self.examples)}: pass a "
                "separate dev file or a smaller dev size"
            )
        order = list(range(len(self.examples)))
        random.Random(seed).shuffle(order)
        dev = set(order[:size])
        keep = [e for i, e in enumerate(self.examples) if i not in dev]
        held = [e for i, e in enumerate(self.examples) if i in dev]
        return (PairData(keep, self.data_hash, self.source),
                PairData(held, self.data_hash, self.source))


def read_pairs(source: Any, name: str | None = None) -> PairData:
    """Load training pairs from a JSONL path, a ``datasets.Dataset`` or a list of dicts.

    Raises :class:`DataError` for an empty source, a record without ``query``/``positive``,
    or a field of the wrong type, naming the file and line.

    Example::

        data = read_pairs("pairs.jsonl")
        len(data), sorted(data.tasks())
    """
    if isinstance(source, PairData):
        return source
    if isinstance(source, (str, Path)):
        return _read_jsonl(Path(source))
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        rows = list(source)  # a datasets.Dataset iterates as dicts
        label = name or type(source).__name__
        examples = [_example(r, f"{label} row {i}") for i, r in enumerate(rows)]
        if not examples:
            raise DataError(f"{label} holds no training records")
        _check_tasks(examples, label)
        return PairData(examples, _records_hash(rows), label)
    raise DataError(
        f"training data must be a JSONL path, a datasets.Dataset or a list of dicts, "
        f"not {type(source).__name__}"
    )


def _read_jsonl(path: Path) -> PairData:
    if not path.is_file():
        raise DataError(f"training data {path} does not exist")
    raw = path.read_bytes()
    examples = []
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not valid JSON ({exc})") from exc
        examples.append(_example(record, f"{path}:{n}"))
    if not examples:
        raise DataError(f"{path} is empty: it holds no training records")
    _check_tasks(examples, str(path))
    return PairData(examples, hashlib.sha256(raw).hexdigest(), str(path))


def _example(record: Any, where: str) -> Example:
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    for key in REQUIRED:
        if key not in record or record[key] is None:
            raise DataError(f"{where}: record has no {key!r} (required: query, positive)")
    for key in ("query", "positive", "task"):
        if key in record and not isinstance(record[key], str):
            raise DataError(
                f"{where}: field {key!r} must be a string, got {type(record[key]).__name__}"
            )
    for key in REQUIRED:
        if not record[key].strip():
            raise DataError(f"{where}: field {key!r} is an empty string")
    negatives = record.get("negatives") or []
    if not isinstance(negatives, (list, tuple)) or not all(isinstance(x, str) for x in negatives):
        raise DataError(f"{where}: field 'negatives' must be a list of strings")
    instruction = record.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise DataError(
            f"{where}: field 'instruction' must be a string or null, got "
            f"{type(instruction).__name__}"
        )
    instruction = instruction or None
    task = record.get("task") or (instruction or "")
    return Example(record["query"], record["positive"], tuple(negatives), instruction, task)


def _check_tasks(examples: list[Example], label: str) -> None:
    # a batch is one task; a soft prompt for some rows and none for others cannot mix
    seen: dict[str, bool] = {}
    for ex in examples:
        has = ex.instruction is not None
        if seen.setdefault(ex.task, has) != has:
            raise DataError(
                f"{label}: task {ex.task!r} mixes records with and without an instruction"
            )


def _records_hash(rows: list[Any]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(dict(row), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


class TaskBatches:
    """Batches of example indices, each from one task, reshuffled every epoch.

    The order is a pure function of ``(seed, epoch)``, so a resumed run replays it.
    With several processes the *global* batch is formed here and each rank takes its
    contiguous slice, so results do not depend on the number of processes. A task's last
    partial batch is kept when it still has at least two rows per process-multiple.

    Example::

        batches = TaskBatches(data, batch_size=32, seed=0)
        for indices in batches.epoch(0): ...
    """

    def __init__(self, data: PairData, batch_size: int, seed: int = 0, world: int = 1) -> None:
        if batch_size < 2:
            raise DataError(f"batch_size must be >= 2 for in-batch negatives, got {batch_size}")
        if batch_size % world:
            raise DataError(
                f"batch_size {batch_size} (global) must be divisible by the {world} processes"
            )
        self.data, self.batch_size, self.seed, self.world = data, batch_size, seed, world
        if not self.epoch(0):
            raise DataError(
                f"{data.source}: no task has at least {max(2, world)} examples, so no batch "
                "with in-batch negatives can be formed"
            )

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        batches = []
        for _, rows in sorted(self.data.tasks().items()):
            rows = rows[:]
            rng.shuffle(rows)
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                chunk = chunk[: len(chunk) - len(chunk) % self.world]
                if len(chunk) >= max(2, self.world):
                    batches.append(chunk)
        rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self.epoch(0))


def negatives_per_example(examples: list[Example], cap: int) -> int:
    """How many hard negatives every row of a batch contributes: the fewest any row has,
    at most ``cap``; equal counts keep tensor shapes equal across processes."""
    if not examples or cap <= 0:
        return 0
    return min(cap, min(len(e.negatives) for e in examples))
