"""BM25 baseline (``bm25s``) run through ``mteb.evaluate`` as a search model.

Going through mteb means nDCG@10 and every other metric are computed by mteb's own retrieval
evaluator, so BM25 and embedder numbers on the same task are directly comparable.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from pe_core.eval.mteb_env import prepare_mteb

prepare_mteb()

from mteb.models import ModelMeta  # noqa: E402


def _english_stemmer(enabled: bool | None) -> Any:
    """PyStemmer's English stemmer if wanted and installed (``None``: use it if installed)."""
    if enabled is False:
        return None
    if importlib.util.find_spec("Stemmer") is None:
        if enabled:
            from pe_core.errors import ConfigError

            raise ConfigError("stemming needs PyStemmer: pip install PyStemmer")
        return None
    import Stemmer

    return Stemmer.Stemmer("english").stemWord


class BM25Search:
    """mteb ``SearchProtocol`` model: English stopwords, optional stemming, Lucene BM25.

    Example::

        >>> import mteb
        >>> from pe_core.eval import BM25Search, get_tasks
        >>> res = mteb.evaluate(BM25Search(), get_tasks(["PELocalDocstringRetrieval"]),
        ...                     cache=None)  # doctest: +SKIP
    """

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, stemmer: bool | None = None) -> None:
        self.k1 = k1
        self.b = b
        self._stem = _english_stemmer(stemmer)
        self._retriever: Any = None
        self._doc_ids: list[str] = []
        self.mteb_model_meta = ModelMeta(
            loader=None,
            name="pe/bm25s",
            revision=f"k1={k1},b={b},stem={self._stem is not None}",
            release_date=None,
            languages=["eng-Latn"],
            n_parameters=0,
            memory_usage_mb=None,
            max_tokens=None,
            embed_dim=None,
            license=None,
            open_weights=True,
            public_training_code=None,
            public_training_data=None,
            framework=[],
            similarity_fn_name=None,
            use_instructions=False,
            training_datasets=None,
            model_type=["sparse"],
        )

    def _tokenize(self, texts: list[str], return_ids: bool) -> Any:
        import bm25s

        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stem, return_ids=return_ids, show_progress=False
        )

    def index(
        self,
        corpus: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        encode_kwargs: Any = None,
        num_proc: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Index the task's corpus (``id``, ``text``, optional ``title`` columns)."""
        import bm25s

        rows = list(corpus)
        texts = [" ".join(filter(None, [r.get("title") or "", r["text"]])) for r in rows]
        self._doc_ids = [str(r["id"]) for r in rows]
        self._retriever = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        self._retriever.index(self._tokenize(texts, return_ids=True), show_progress=False)

    def search(
        self,
        queries: Any,
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        top_k: int,
        encode_kwargs: Any = None,
        top_ranked: Any = None,
        num_proc: int | None = None,
        **kwargs: Any,
    ) -> dict[str, dict[str, float]]:
        """Top ``top_k`` documents per query id, ``{query_id: {doc_id: score}}``."""
        if self._retriever is None:
            raise RuntimeError("BM25Search.search called before index")
        rows = list(queries)
        # instruction-retrieval tasks carry an instruction column: BM25 reads it as query text
        texts = [" ".join(filter(None, [r["text"], r.get("instruction") or ""])) for r in rows]
        k = min(top_k, len(self._doc_ids))
        docs, scores = self._retriever.retrieve(
            self._tokenize(texts, return_ids=False), k=k, show_progress=False
        )
        results: dict[str, dict[str, float]] = {}
        for row, idx, sc in zip(rows, docs, scores, strict=True):
            allowed = set(top_ranked[row["id"]]) if top_ranked and row["id"] in top_ranked else None
            # a score of 0 means no shared term: such "hits" are arbitrary, so drop them
            results[str(row["id"])] = {
                self._doc_ids[i]: float(s)
                for i, s in zip(idx, sc, strict=True)
                if s > 0 and (allowed is None or self._doc_ids[i] in allowed)
            }
        return results


def bm25_baseline(
    task_names: Sequence[str] = ("PELocalDocstringRetrieval",),
    *,
    eval_splits: Sequence[str] | None = None,
    **bm25_kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Evaluate BM25 with mteb on retrieval tasks: ``{task: {split: main score}}``.

    Example::

        >>> bm25_baseline()  # doctest: +SKIP
        {'PELocalDocstringRetrieval': {'test': 0.52}}
    """
    import mteb

    from pe_core.eval.catalog import get_tasks

    result = mteb.evaluate(
        BM25Search(**bm25_kwargs),
        get_tasks(list(task_names), eval_splits=eval_splits),
        cache=None,
        show_progress_bar=False,
    )
    out: dict[str, dict[str, float]] = {}
    for tr in result.task_results:
        # every mteb score dict carries its task's main score under "main_score"
        out[tr.task_name] = {
            split: float(entries[0]["main_score"]) for split, entries in tr.scores.items()
        }
    return out
