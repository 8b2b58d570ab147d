"""The local corpus: (summary → documentation) pairs from text every machine already has.

Sources: the docstrings of Python's standard library (parsed, not imported) and, where
installed, man pages. Pairs are cleaned, deduplicated and split train/dev/test by a stable
hash; no query or document text appears in two splits. The result is cached as JSON under
``<cache>/corpus/`` (see :func:`pe_core.data.cache_dir`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from pe_core.data.cache import cache_dir, write_json_atomic
from pe_core.data.manpages import MAN_ROOTS, iter_man_pairs
from pe_core.data.stdlib_docs import iter_stdlib_pairs, stdlib_root
from pe_core.data.text import (
    check_split_percents,
    dedupe_key,
    hash_split,
    squash,
    stable_hash,
    truncate,
    word_count,
)
from pe_core.errors import DataError

CORPUS_VERSION = 1
SPLITS = ("train", "dev", "test")

#: The instruction that goes with these pairs, for training and for the local eval tasks alike.
DOC_INSTRUCTION = "Given a one-line summary, retrieve the documentation that it summarizes"


@dataclass(frozen=True)
class Pair:
    """One query (a summary line) and its positive document (the text it summarizes).

    Example::

        >>> p = Pair("Return the sum.", "Both numbers must be finite.", "stdlib:m.add", "dev")
        >>> p.split, len(p.id)
        ('dev', 16)
    """

    query: str
    document: str
    source: str
    split: str = "train"

    @property
    def id(self) -> str:
        """Stable id (16 hex digits) derived from the query, which is unique in the corpus."""
        return f"{stable_hash(dedupe_key(self.query)):016x}"


@dataclass(frozen=True)
class CorpusSettings:
    """What goes into the corpus; every field changes the cache key.

    Example::

        >>> CorpusSettings(max_man_pages=0).max_man_pages  # stdlib docstrings only
        0
    """

    max_man_pages: int = 1500
    min_query_words: int = 3
    max_query_chars: int = 200
    min_document_words: int = 12
    max_document_chars: int = 1200
    dev_percent: int = 10
    test_percent: int = 10

    def __post_init__(self) -> None:
        check_split_percents(self.dev_percent, self.test_percent)
        if self.min_query_words < 1 or self.min_document_words < 1:
            raise DataError("minimum word counts must be at least 1")


def split_of(query: str, settings: CorpusSettings) -> str:
    """The split a query falls in: a stable hash of its dedupe key, so it never moves."""
    return hash_split(query, settings.dev_percent, settings.test_percent)


def _clean(query: str, document: str, settings: CorpusSettings) -> tuple[str, str] | None:
    query = squash(query)
    # keep paragraph breaks in documents: they are real structure, and cheap
    document = "\n".join(squash(line) for line in document.splitlines() if line.strip())
    document = truncate(document, settings.max_document_chars)
    if word_count(query) < settings.min_query_words or len(query) > settings.max_query_chars:
        return None
    if word_count(document) < settings.min_document_words:
        return None
    if dedupe_key(query) in dedupe_key(document)[: len(query) + 40]:
        # the body opens by repeating the summary: retrieval would be string matching
        if word_count(document) < settings.min_document_words + word_count(query):
            return None
    return query, document


def build_pairs(
    settings: CorpusSettings | None = None,
    raw: Iterable[tuple[str, str, str]] | None = None,
) -> list[Pair]:
    """Build the corpus without touching the cache. ``raw`` replaces the machine's sources.

    Example::

        >>> raw = [("Add two numbers together.", "The result is exact for integers "
        ...         "and rounded for floats, like the + operator.", "stdlib:m.add")]
        >>> [p.source for p in build_pairs(CorpusSettings(min_document_words=5), raw)]
        ['stdlib:m.add']
    """
    settings = settings or CorpusSettings()
    if raw is None:
        raw = _machine_sources(settings)
    seen_queries: set[str] = set()
    seen_docs: set[str] = set()
    kept: list[tuple[str, str, str]] = []
    for query, document, source in raw:
        cleaned = _clean(query, document, settings)
        if cleaned is None:
            continue
        qk, dk = dedupe_key(cleaned[0]), dedupe_key(cleaned[1])
        # first occurrence wins; the walk order is deterministic, so is the result
        if qk in seen_queries or dk in seen_docs:
            continue
        seen_queries.add(qk)
        seen_docs.add(dk)
        kept.append((cleaned[0], cleaned[1], source))
    # a text that is a query here and a document there could straddle two splits
    return [
        Pair(q, d, s, split_of(q, settings))
        for q, d, s in kept
        if dedupe_key(q) not in seen_docs and dedupe_key(d) not in seen_queries
    ]


def _machine_sources(settings: CorpusSettings) -> Iterable[tuple[str, str, str]]:
    yield from iter_stdlib_pairs()
    yield from iter_man_pairs(settings.max_man_pages)


def corpus_fingerprint(pairs: Iterable[Pair]) -> str:
    """SHA-256 (hex) over every pair in order: what a model or a result was built from."""
    h = hashlib.sha256()
    for p in pairs:
        for field in (p.query, p.document, p.source, p.split):
            h.update(field.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()


def _cache_key(settings: CorpusSettings) -> str:
    # the sources are this interpreter's stdlib and this machine's man roots
    parts = [
        str(CORPUS_VERSION),
        sys.version,
        str(stdlib_root()),
        ",".join(str(r) for r in MAN_ROOTS),
        json.dumps(asdict(settings), sort_keys=True),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def corpus_path(settings: CorpusSettings | None = None) -> Path:
    """Where the cached corpus for ``settings`` lives (it may not exist yet)."""
    settings = settings or CorpusSettings()
    return cache_dir() / "corpus" / f"docpairs-v{CORPUS_VERSION}-{_cache_key(settings)}.json"


@functools.lru_cache(maxsize=4)
def _built(settings: CorpusSettings) -> tuple[Pair, ...]:
    # one build per process even when tests point PE_CACHE at several temp dirs
    return tuple(build_pairs(settings))


def read_cached_pairs(path: Path) -> list[Pair] | None:
    """The pairs cached at ``path``, or None when it is missing, corrupt or foreign."""
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        pairs = [Pair(**row) for row in payload["pairs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # rebuilt and overwritten by the caller
    return pairs if payload.get("fingerprint") == corpus_fingerprint(pairs) else None


def write_cached_pairs(path: Path, pairs: list[Pair], **meta: object) -> None:
    """Cache ``pairs`` at ``path`` with their fingerprint and ``meta`` (atomically).

    Example::

        >>> write_cached_pairs(cache_dir() / "p.json", [Pair("q a b", "d", "s")], version=1)
        >>> read_cached_pairs(cache_dir() / "p.json")[0].query
        'q a b'
    """
    rows = [asdict(p) for p in pairs]
    write_json_atomic(path, {**meta, "fingerprint": corpus_fingerprint(pairs), "pairs": rows})


def load_corpus(settings: CorpusSettings | None = None, *, rebuild: bool = False) -> list[Pair]:
    """Every pair of the corpus (all splits), from the cache or built and cached now.

    Example::

        >>> pairs = load_corpus()
        >>> sorted({p.split for p in pairs})
        ['dev', 'test', 'train']
    """
    settings = settings or CorpusSettings()
    path = corpus_path(settings)
    if not rebuild:
        cached = read_cached_pairs(path)
        if cached is not None:
            return cached
    if rebuild:
        _built.cache_clear()
    pairs = list(_built(settings))
    if not pairs:
        raise DataError(
            "the local corpus is empty: no stdlib docstrings or man pages were found; "
            f"check that {stdlib_root()} holds the Python standard library sources"
        )
    sources: dict[str, int] = {}
    for p in pairs:
        kind = p.source.split(":", 1)[0]
        sources[kind] = sources.get(kind, 0) + 1
    write_cached_pairs(
        path,
        pairs,
        version=CORPUS_VERSION,
        settings=asdict(settings),
        python=sys.version,
        sources=sources,
    )
    return pairs


def load_pairs(split: str, settings: CorpusSettings | None = None) -> list[Pair]:
    """The pairs of one split: ``"train"``, ``"dev"`` or ``"test"``.

    Example::

        >>> test = load_pairs("test")
        >>> test[0].query, test[0].document[:40]  # doctest: +SKIP
        ('Return a new sorted list from the items in iterable.', 'A custom key function ...')
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    pairs = [p for p in load_corpus(settings) if p.split == split]
    if not pairs:
        raise DataError(f"the {split!r} split of the local corpus is empty")
    return pairs


def _family(source: str) -> str:
    """Pairs likely to be confusable: same top-level module, or same man section."""
    kind, _, name = source.partition(":")
    if kind == "man":
        return "man:" + name.rsplit("(", 1)[-1]
    return f"{kind}:{name.split('.', 1)[0]}"


def training_records(
    pairs: list[Pair],
    *,
    negatives: int = 1,
    instruction: str | None = DOC_INSTRUCTION,
    seed: int = 0,
) -> list[dict]:
    """Training rows ``{"query", "positive", "negatives"?, "instruction"?}`` for ``pairs``.

    Hard negatives are documents of other pairs from the same family (same top-level stdlib
    module or man section), falling back to any other pair; the choice is seeded.

    Example::

        >>> rows = training_records(load_pairs("train"), negatives=1)
        >>> sorted(rows[0])
        ['instruction', 'negatives', 'positive', 'query']
    """
    if not pairs:
        raise DataError("no pairs to write training records from")
    if negatives < 0:
        raise DataError("negatives must be >= 0")
    rng = random.Random(seed)
    families: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        families.setdefault(_family(p.source), []).append(i)
    rows = []
    for p in pairs:
        row: dict = {"query": p.query, "positive": p.document}
        if negatives:
            # a pair whose document is this one's (two example sentences of one word
            # sense) is no negative: the loss would push the query from its own answer
            pool = [j for j in families[_family(p.source)] if pairs[j].document != p.document]
            chosen = rng.sample(pool, min(negatives, len(pool)))
            others = 0
            if len(chosen) < negatives:  # the family is too small: any other pair
                others = sum(q.document != p.document for q in pairs) - len(chosen)
            while len(chosen) < negatives and others > 0:
                j = rng.randrange(len(pairs))
                if pairs[j].document != p.document and j not in chosen:
                    chosen.append(j)
                    others -= 1
            row["negatives"] = [pairs[j].document for j in chosen]
        if instruction:
            row["instruction"] = instruction
        rows.append(row)
    return rows


def write_training_jsonl(
    path: str | os.PathLike[str],
    *,
    split: str = "train",
    negatives: int = 1,
    instruction: str | None = DOC_INSTRUCTION,
    seed: int = 0,
    settings: CorpusSettings | None = None,
) -> int:
    """Write one split as training JSONL (atomically) and return the number of rows.

    Example::

        >>> write_training_jsonl("/tmp/pe-train.jsonl", negatives=2)  # doctest: +SKIP
        2683
    """
    rows = training_records(
        load_pairs(split, settings), negatives=negatives, instruction=instruction, seed=seed
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)
