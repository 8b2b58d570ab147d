"""Small text helpers shared by the corpus sources: whitespace, truncation, dedupe keys."""

from __future__ import annotations

import hashlib
import re

from pe_core.errors import DataError

_WS = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s.,;:!?]+$")


def squash(text: str) -> str:
    """Collapse every run of whitespace into one space and strip the ends."""
    return _WS.sub(" ", text).strip()


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when possible."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    # a boundary far back would throw away most of the budget: cut mid-word instead
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def dedupe_key(text: str) -> str:
    """Key under which two texts count as the same: case, spacing and end punctuation ignored."""
    return _TRAILING.sub("", squash(text).lower())


def stable_hash(text: str) -> int:
    """A hash that is the same in every process and on every machine (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def check_split_percents(dev_percent: int, test_percent: int) -> None:
    """Raise :class:`~pe_core.errors.DataError` unless dev + test leave a train split."""
    if not 0 <= dev_percent + test_percent < 100:
        raise DataError("dev_percent + test_percent must be in [0, 100)")


def hash_split(key: str, dev_percent: int, test_percent: int) -> str:
    """``"train"``, ``"dev"`` or ``"test"`` for ``key``: a stable hash, so it never moves.

    Everything that shares a key shares a split, which is how texts are kept out of two.

    Example::

        >>> hash_split("a key", dev_percent=0, test_percent=0)
        'train'
    """
    bucket = stable_hash("split:" + dedupe_key(key)) % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + dev_percent:
        return "dev"
    return "train"


def word_count(text: str) -> int:
    return len(text.split())
