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
        return PairData(examples, _records_hash(examples), label)
    raise DataError(
        f"training data must be a JSONL path, a datasets.Dataset or a list of dicts, "
        f"not {type(source).__name__}"
    )


def _read_jsonl(path: Path) -> PairData:
    if path.is_dir():
        raise DataError(f"{path} is a folder: pass a JSONL file of training records")
    if not path.is_file():
        raise DataError(f"training data {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a BOM, as some editors write, is not a record
    except UnicodeDecodeError as exc:
        at = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{at}: not UTF-8 text ({exc.reason}); save the file as "
                        "UTF-8") from None
    examples = []
    # "\n" alone ends a record: JSON allows U+2028, U+0085 or a form feed raw inside a
    # string (json.dumps(ensure_ascii=False) writes them so), and str.splitlines() would
    # cut the record there
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        examples.append(_example(_parse(line, f"{path}:{n}"), f"{path}:{n}"))
    if not examples:
        raise DataError(f"{path} is empty: it holds no training records")
    _check_tasks(examples, str(path))
    return PairData(examples, hashlib.sha256(raw).hexdigest(), str(path))


def _parse(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        cut = line.lstrip()[:1] in ("[", "{") and exc.pos >= len(line.rstrip())
        hint = ("; a record must be one line: JSONL holds one JSON object per line, not a "
                "JSON array or an indented file") if cut else ""
        raise DataError(f"{where}: not valid JSON ({exc}){hint}") from None
    except RecursionError:  # the decoder recurses once per level of nesting
        raise DataError(f"{where}: a value is nested too deeply to read; a record is one "
                        "flat object of strings (and a list of negatives)") from None


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
        _text(record[key], where, key)
    negatives = _negatives(record.get("negatives"), where)
    if record["positive"].strip() in (n.strip() for n in negatives):
        raise DataError(f"{where}: a negative is the positive itself; the loss would push "
                        "the query away from its own answer: remove it from 'negatives'")
    instruction = record.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise DataError(
            f"{where}: field 'instruction' must be a string or null, got "
            f"{type(instruction).__name__}"
        )
    for key in ("instruction", "task"):
        if record.get(key):
            _text(record[key], where, key, empty_ok=True)
    instruction = instruction or None
    task = record.get("task") or (instruction or "")
    return Example(record["query"], record["positive"], negatives, instruction, task)


def _negatives(value: Any, where: str) -> tuple[str, ...]:
    """A record's hard negatives: absent or null is none; anything else must be a list of
    texts (``""``, ``0``, ``false`` or ``{}`` are mistakes, not "no negatives")."""
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: field 'negatives' must be a list of strings (or left out), "
                        f"got {type(value).__name__} {value!r:.40}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise DataError(f"{where}: field 'negatives' must be a list of strings; item {i} "
                            f"is {type(item).__name__}")
        _text(item, where, f"negatives[{i}]")
    return tuple(value)


def _text(value: str, where: str, field: str, empty_ok: bool = False) -> None:
    """A text the tokenizer can read: not blank (unless ``empty_ok``), and encodable as
    UTF-8 (a lone surrogate such as ``"\\ud800"`` from a JSON escape is not)."""
    if not empty_ok and not value.strip():
        raise DataError(f"{where}: field {field!r} is an empty string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(
            f"{where}: field {field!r} holds a lone surrogate ({value[exc.start]!r} at "
            f"character {exc.start}), which is not text; fix or drop the record"
        ) from None


def _check_tasks(examples: list[Example], label: str) -> None:
    # a batch is one task; a soft prompt for some rows and none for others cannot mix
    seen: dict[str, bool] = {}
    for ex in examples:
        has = ex.instruction is not None
        if seen.setdefault(ex.task, has) != has:
            raise DataError(
                f"{label}: task {ex.task!r} mixes records with and without an instruction"
            )


def _records_hash(examples: list[Example]) -> str:
    """The hash of what training reads from in-memory records: the fields of each
    :class:`Example`, so keys the reader ignores (ids of any type) do not enter it."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.query, ex.positive, list(ex.negatives), ex.instruction,
                                  ex.task], ensure_ascii=False).encode())
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
            need = max(2, world)
            raise DataError(
                f"{data.source}: no task has {need} or more examples ({len(data.tasks())} "
                f"task(s), the largest with {max(map(len, data.tasks().values()))}): a batch "
                "holds one task (a record's 'task', else its instruction), and a query needs "
                "another record of its task in the batch as an in-batch negative. Give "
                f"records that belong together the same task, or add examples so a task has "
                f"at least {need}"
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


def check_negatives(data: PairData, cap: int) -> None:
    """Hard negatives that training would not use as given are refused, not dropped: a
    batch takes the same number from every row (equal tensor shapes, across processes
    too), so within a task every record must have ``cap`` or more, or none at all.
    ``cap`` 0 ignores them; above the default of 1, data without any is refused too
    (the setting asks for negatives the data does not have)."""
    if cap <= 0:
        return
    if cap > 1 and not any(ex.negatives for ex in data.examples):
        raise DataError(f"{data.source}: hard_negatives is {cap} but no record has "
                        "'negatives': add them to the records, or leave hard_negatives "
                        "(--hard-negatives) out to train on in-batch negatives")
    for task, rows in data.tasks().items():
        counts = [len(data.examples[i].negatives) for i in rows]
        if not any(counts):
            continue  # this task trains on in-batch negatives only
        if min(counts) >= cap:
            continue
        short, has = next((i, c) for i, c in zip(rows, counts, strict=True) if c < cap)
        fix = (f"lower hard_negatives (--hard-negatives) to {min(counts)}" if min(counts) else
               "pass hard_negatives=0 (--hard-negatives 0) to train on in-batch negatives only")
        raise DataError(
            f"{data.source}: record {short + 1} (task {task!r:.60}) has {has} hard "
            f"negative(s) and hard_negatives is {cap}: every row of a batch gives the same "
            f"number, so the other records of its task would lose theirs. Give every record "
            f"of the task {cap} or more negatives (or none at all), or {fix}"
        )


def negatives_per_example(examples: list[Example], cap: int) -> int:
    """How many hard negatives every row of a batch contributes: the fewest any row has,
    at most ``cap``; equal counts keep tensor shapes equal across processes."""
    if not examples or cap <= 0:
        return 0
    return min(cap, min(len(e.negatives) for e in examples))
