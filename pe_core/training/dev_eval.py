"""A cheap in-process retrieval score on held-out pairs, for logs and benchmarks.

Each dev query must retrieve its own positive among all dev documents (positives and
hard negatives, deduplicated). Works with anything that has PromptEmbedder's
``encode(texts, instruction=None, batch_size=...)``: the trained embedder, an aligned
one, or the LoRA baseline, so all three are scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pe_core.errors import DataError
from pe_core.training.data import Example


def retrieval_scores(
    model: Any, examples: Sequence[Example], batch_size: int = 32, k: int = 10
) -> dict[str, float]:
    """``{"ndcg@10", "mrr@10", "recall@1"}`` of ``model`` on ``examples``.

    Queries are encoded with their own instruction (grouped by instruction), documents
    with ``instruction=None`` (the model's document side).

    Example::

        retrieval_scores(pe_core.load(...), read_pairs("dev.jsonl").examples)["ndcg@10"]
    """
    if not examples:
        raise DataError("the dev set is empty")
    docs = list(dict.fromkeys(
        [e.positive for e in examples] + [n for e in examples for n in e.negatives]
    ))
    doc_index = {d: i for i, d in enumerate(docs)}
    doc_vecs = np.asarray(model.encode(docs, batch_size=batch_size, show_progress_bar=False))
    query_vecs = np.zeros((len(examples), doc_vecs.shape[1]), dtype=np.float32)
    by_instruction: dict[str | None, list[int]] = {}
    for i, e in enumerate(examples):
        by_instruction.setdefault(e.instruction, []).append(i)
    for instruction, rows in by_instruction.items():
        vecs = model.encode([examples[i].query for i in rows], instruction=instruction,
                            batch_size=batch_size, show_progress_bar=False)
        query_vecs[rows] = np.asarray(vecs)
    scores = query_vecs @ doc_vecs.T
    target = np.array([doc_index[e.positive] for e in examples])
    # rank = how many documents score strictly higher than the positive (ties favour it)
    rank = (scores > scores[np.arange(len(examples)), target][:, None]).sum(1)
    hit = rank < k
    return {
        f"ndcg@{k}": float(np.where(hit, 1.0 / np.log2(rank + 2), 0.0).mean()),
        f"mrr@{k}": float(np.where(hit, 1.0 / (rank + 1), 0.0).mean()),
        "recall@1": float((rank == 0).mean()),
    }


MAIN_SCORE = "ndcg@10"
