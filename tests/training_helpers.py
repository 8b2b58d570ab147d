"""Pair records, tiny PromptEmbedder methods and examples shared by the training tests."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

from pe_core.training.data import Example

WORDS = (
    "alpha beta gamma delta file open read write sum number fox dog python class "
    "return value parse argument list string socket thread queue"
).split()
INSTRUCTIONS = ("Retrieve the documentation", "Find a similar sentence")


def pair_records(n: int = 48, seed: int = 0, tasks: int = 2, negatives: int = 1) -> list[dict]:
    """Query = three words; positive = the same words plus four; random negatives."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.sample(WORDS, 3)
        row = {
            "query": " ".join(words),
            "positive": " ".join(words + rng.sample(WORDS, 4)),
            "instruction": INSTRUCTIONS[i % tasks],
        }
        if negatives:
            row["negatives"] = [" ".join(rng.sample(WORDS, 6)) for _ in range(negatives)]
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_method(llama_spec, placement="suffix", **settings):
    """A PromptEmbedder method on the tiny llama, in train mode."""
    from pe_core.testing.tiny import tiny_embedder
    from pe_core.training.methods import PromptEmbedderMethod
    from pe_core.training.settings import TrainSettings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedder = tiny_embedder(llama_spec, placement=placement)
    method = PromptEmbedderMethod(embedder, TrainSettings(**settings))
    method.train_mode(True)
    return method


def tiny_examples(n=6, negatives=1):
    """``n`` one-task examples from :func:`pair_records`."""
    return [Example(r["query"], r["positive"], tuple(r.get("negatives", ())), r["instruction"],
                    r["instruction"]) for r in pair_records(n, tasks=1, negatives=negatives)]


def train_tiny(pairs, folders, out, **kw):
    """``pe_core.train`` on the tiny llama: 4 steps of batch 8, a checkpoint every 2."""
    import pe_core

    opts = dict(steps=4, batch_size=8, lr=1e-3, progress=False, save_every=2)
    opts.update(kw)
    return pe_core.train(str(pairs), backbone="llama", model=str(folders["model"]),
                         prompting=str(folders["prompting"]), out=out, **opts)
