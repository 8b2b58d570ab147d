"""Run ``mteb.evaluate`` on any ``encode(texts, instruction=...)`` model and keep the
main scores.

Example::

    from pe_core.eval.run import evaluate
    scores = evaluate(model, ["PELocalDocstringRetrieval"])   # {"PELocalDocstringRetrieval": 0.41}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pe_core.eval.mteb_env import prepare_mteb


class WithoutPrompt:
    """A PromptEmbedder read with no soft prompt at all: the frozen backbone alone."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.name = f"{getattr(embedder.config, 'model_id', 'backbone')} (no prompt)"

    def encode(self, texts: Sequence[str], instruction: str | None = None, **kw: Any) -> Any:
        from dataclasses import replace

        saved = self.embedder.config
        self.embedder.config = replace(saved, document_instruction=None)
        try:
            return self.embedder.encode(texts, instruction=None, **kw)
        finally:
            self.embedder.config = saved


def evaluate(
    model: Any,
    tasks: Sequence[str],
    *,
    cache: str | Path | None = None,
    eval_splits: Sequence[str] = ("test",),
    batch_size: int = 64,
    name: str | None = None,
) -> dict[str, float]:
    """Main score per task. ``cache``: an mteb results folder (``None`` writes nothing)."""
    prepare_mteb()
    import mteb
    from mteb.cache import ResultCache

    from pe_core.eval.catalog import get_tasks
    from pe_core.eval.mteb_encoder import MTEBEncoder, model_meta_for

    meta = model_meta_for(model, name=name if "/" in name else f"pe/{name}") if name else None
    encoder = MTEBEncoder(model, batch_size=batch_size, meta=meta)
    result = mteb.evaluate(
        encoder,
        get_tasks(list(tasks), eval_splits=list(eval_splits)),
        cache=ResultCache(cache) if cache is not None else None,
        overwrite_strategy="always",
        show_progress_bar=False,
    )
    scores = {}
    for tr in result.task_results:
        split = next(iter(tr.scores))
        scores[tr.task_name] = float(tr.scores[split][0]["main_score"])
    return scores
