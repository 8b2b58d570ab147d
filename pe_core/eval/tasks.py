"""Local MTEB tasks built from the corpus dev/test splits; nothing is downloaded.

* ``PELocalDocstringRetrieval``: queries are summary lines, the corpus is every document of
  the split, one relevant document per query (nDCG@10).
* ``PELocalDocstringPairClassification``: (summary, document) pairs labelled 1 when the
  document is the summary's own, 0 when it is another pair's, preferably from the same module
  or man section so the negatives share vocabulary (average precision).

Both evaluate ``test`` by default and also hold ``dev`` (``get_tasks(..., eval_splits=["dev"])``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pe_core.eval.mteb_env import prepare_mteb

prepare_mteb()

from datasets import Dataset  # noqa: E402
from mteb.abstasks import AbsTaskPairClassification, AbsTaskRetrieval  # noqa: E402
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData  # noqa: E402
from mteb.abstasks.task_metadata import TaskMetadata  # noqa: E402
from mteb.types import PromptType  # noqa: E402

from pe_core.data.corpus import CORPUS_VERSION, DOC_INSTRUCTION, Pair, load_pairs  # noqa: E402
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
    """Queries, corpus and qrels (one relevant document per query) for ``pairs``.

    Example::

        >>> data = retrieval_split(load_pairs("dev"))
        >>> len(data["queries"]) == len(data["corpus"]) == len(data["relevant_docs"])
        True
    """
    if not pairs:
        raise DataError("cannot build a retrieval split from no pairs")
    return RetrievalSplitData(
        queries=Dataset.from_list([{"id": f"q{p.id}", "text": p.query} for p in pairs]),
        corpus=Dataset.from_list([{"id": f"d{p.id}", "text": p.document} for p in pairs]),
        relevant_docs={f"q{p.id}": {f"d{p.id}": 1} for p in pairs},
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


LOCAL_TASKS: dict[str, type] = {
    cls.metadata.name: cls
    for cls in (PELocalDocstringRetrieval, PELocalDocstringPairClassification)
}


def get_tasks(names: Sequence[str] | str, eval_splits: Sequence[str] | None = None) -> list:
    """Task objects by name: pe's local tasks, else tasks installed with mteb.

    Installed mteb tasks download their data when first evaluated (not possible offline).

    Example::

        >>> [t.metadata.name for t in get_tasks(["PELocalDocstringRetrieval"])]
        ['PELocalDocstringRetrieval']
    """
    if isinstance(names, str):
        names = [names]
    tasks = []
    for name in names:
        if name in LOCAL_TASKS:
            task = LOCAL_TASKS[name]()
            if eval_splits:
                task.filter_eval_splits(list(eval_splits))
        else:
            import mteb

            try:
                (task,) = mteb.get_tasks(tasks=[name], eval_splits=eval_splits)
            except (KeyError, ValueError) as e:
                raise DataError(
                    f"unknown task {name!r}: not a local task ({', '.join(LOCAL_TASKS)}) "
                    f"and mteb does not know it ({e})"
                ) from e
        tasks.append(task)
    return tasks
