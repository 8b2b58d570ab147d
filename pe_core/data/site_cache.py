"""The installed packages' docstring pairs, cleaned, split and cached like the corpus.

Parsing a few thousand files takes a while on a small machine, so the pairs are cached
under ``<cache>/corpus/``, keyed by every installed distribution's name and version (a
new or upgraded package gives a new key) and the reading's limits.
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path

from pe_core.data.cache import cache_dir
from pe_core.data.corpus import (
    CorpusSettings,
    Pair,
    build_pairs,
    read_cached_pairs,
    write_cached_pairs,
)
from pe_core.data.site_docs import iter_site_pairs, site_roots

SITE_VERSION = 1
MAX_FILES = 60  # per top-level package
MAX_PAIRS = 150  # per top-level package


def _cache_path() -> Path:
    dists = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                    if d.metadata["Name"]})
    key = json.dumps([SITE_VERSION, MAX_FILES, MAX_PAIRS, [str(r) for r in site_roots()],
                      dists])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "corpus" / f"site-v{SITE_VERSION}-{digest}.json"


@functools.lru_cache(maxsize=1)
def _built() -> tuple[Pair, ...]:
    # the corpus's cleaning, deduplication and 80/10/10 split by a hash of the query
    return tuple(build_pairs(CorpusSettings(), raw=iter_site_pairs(max_files=MAX_FILES,
                                                                   max_pairs=MAX_PAIRS)))


def load_site_pairs() -> list[Pair]:
    """Every docstring pair of the installed packages (all splits)."""
    path = _cache_path()
    pairs = read_cached_pairs(path)
    if pairs is None:
        pairs = list(_built())
        write_cached_pairs(path, pairs, version=SITE_VERSION)
    return pairs
