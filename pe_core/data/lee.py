"""The Lee news corpus: 50 short Australian news articles and human similarity ratings of
every pair of them (Lee, Pincombe and Welsh 2005), as gensim's test data ships them.

The two files are read from the ``gensim`` wheel (installed or downloaded, see
:mod:`pe_core.data.packaged`); gensim itself is never imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from pe_core.data.packaged import PackagedData, read_packaged
from pe_core.errors import DataError

_DOCS = "gensim/test/test_data/lee.cor"
_RATINGS = "gensim/test/test_data/similarities0-1.txt"

#: gensim 4.4.0's copies of the corpus and of the mean human ratings (0 = unrelated, 1 = same).
LEE_DATA = PackagedData(
    "gensim",
    "4.4.0",
    {
        _DOCS: "a878f9a58f6743c32985c56c2f2f75988386216b38a4023a01fd3bcf7884d93e",
        _RATINGS: "23762bc6b728897144dda3d324a2c032dc1e059e1009806226d64b6dd123ed79",
    },
)

#: What the similarity task asks of the query side (both sides: the task is symmetric).
LEE_INSTRUCTION = "Retrieve news articles that report on a similar topic"


@dataclass(frozen=True)
class RatedPair:
    """Two documents (indices into the document list) and their mean human rating."""

    first: int
    second: int
    rating: float


def parse_lee(documents: str, ratings: str) -> tuple[list[str], list[RatedPair]]:
    """Documents (one per line) and the rated pairs ``i < j`` of the upper triangle.

    Example::

        >>> docs, pairs = parse_lee("a b\\nc d\\n", "1 0.25\\n0 1\\n")
        >>> docs, pairs
        (['a b', 'c d'], [RatedPair(first=0, second=1, rating=0.25)])
    """
    docs = [line.strip() for line in documents.splitlines() if line.strip()]
    rows = [[float(x) for x in line.split()] for line in ratings.splitlines() if line.strip()]
    if len(docs) < 2 or len(rows) != len(docs) or any(len(r) != len(docs) for r in rows):
        raise DataError(
            f"the Lee corpus has {len(docs)} documents but a {len(rows)}-row rating matrix; "
            "expected one square row per document"
        )
    pairs = [
        RatedPair(i, j, rows[i][j]) for i in range(len(docs)) for j in range(i + 1, len(docs))
    ]
    return docs, pairs


def load_lee() -> tuple[list[str], list[RatedPair]]:
    """The 50 documents and their 1,225 rated pairs.

    Raises :class:`~pe_core.errors.MissingFileError` naming the ``pip download`` command when
    the gensim wheel is neither installed nor downloaded.

    Example::

        >>> docs, pairs = load_lee()  # doctest: +SKIP
        >>> len(docs), len(pairs)
        (50, 1225)
    """
    files = read_packaged(LEE_DATA)
    # the corpus is Latin-1 (one pound sign), not UTF-8
    return parse_lee(files[_DOCS].decode("latin-1"), files[_RATINGS].decode("ascii"))
