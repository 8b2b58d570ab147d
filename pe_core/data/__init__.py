"""Local data: a corpus of (summary → documentation) pairs built from text on this machine.

Example::

    from pe_core.data import load_pairs, write_training_jsonl
    test = load_pairs("test")
    write_training_jsonl("train.jsonl", negatives=1)
"""

from __future__ import annotations

from pe_core.data.cache import cache_dir
from pe_core.data.corpus import (
    DOC_INSTRUCTION,
    SPLITS,
    CorpusSettings,
    Pair,
    build_pairs,
    corpus_fingerprint,
    corpus_path,
    load_corpus,
    load_pairs,
    training_records,
    write_training_jsonl,
)

__all__ = [
    "DOC_INSTRUCTION",
    "SPLITS",
    "CorpusSettings",
    "Pair",
    "build_pairs",
    "cache_dir",
    "corpus_fingerprint",
    "corpus_path",
    "load_corpus",
    "load_pairs",
    "training_records",
    "write_training_jsonl",
]
