"""Local data: a corpus of (summary → documentation) pairs built from text on this machine,
and the real evaluation data read from package archives (Lee news corpus, WordNet 3.0).

Example::

    from pe_core.data import load_pairs, load_wordnet_pairs, write_training_jsonl
    test = load_pairs("test")
    write_training_jsonl("train.jsonl", negatives=1)
    glosses = load_wordnet_pairs("train")
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
from pe_core.data.lee import LEE_INSTRUCTION, load_lee
from pe_core.data.packaged import sources_dir
from pe_core.data.wordnet import WORDNET_INSTRUCTION, load_wordnet_pairs

__all__ = [
    "DOC_INSTRUCTION",
    "LEE_INSTRUCTION",
    "SPLITS",
    "WORDNET_INSTRUCTION",
    "CorpusSettings",
    "Pair",
    "build_pairs",
    "cache_dir",
    "corpus_fingerprint",
    "corpus_path",
    "load_corpus",
    "load_lee",
    "load_pairs",
    "load_wordnet_pairs",
    "sources_dir",
    "training_records",
    "write_training_jsonl",
]
