"""The local corpus: sources, cleaning, dedupe, splits, cache, training JSONL."""

from __future__ import annotations

import json

import pytest

from pe_core.data import (
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
from pe_core.data import corpus as corpus_mod
from pe_core.data.manpages import parse_roff
from pe_core.data.stdlib_docs import iter_stdlib_pairs, split_docstring
from pe_core.data.text import dedupe_key, truncate
from pe_core.errors import DataError


@pytest.fixture(scope="module", autouse=True)
def pe_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("pe-cache")
        mp.setenv("PE_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def pairs(pe_cache):
    return load_corpus()


LONG = "This body has enough words in it to pass the minimum document length filter easily."


def test_split_docstring():
    assert split_docstring("Return x.\n\nMore about x.\n\n>>> f(1)\n1") == (
        "Return x.",
        "More about x.",
    )
    assert split_docstring("Only a summary.") is None
    assert split_docstring("Summary.\n\n>>> code_only()") is None


def test_parse_roff_man_and_mdoc():
    man = (
        '.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list directory contents\n.SH SYNOPSIS\n.B ls\n'
        ".SH DESCRIPTION\n.PP\nList \\fBinformation\\fR about the FILEs.\n.TP\n"
        "\\fB\\-a\\fR\ndo not ignore entries\n.SH AUTHOR\nnobody\n"
    )
    summary, body = parse_roff(man)
    assert summary == "list directory contents"
    assert body.splitlines() == ["List information about the FILEs.", "-a do not ignore entries"]
    mdoc = (
        ".Dd x\n.Sh NAME\n.Nm cat\n.Nd concatenate files\n"
        ".Sh DESCRIPTION\nThe\n.Nm\nutility reads\n.Xr ls 1 .\n"
    )
    assert parse_roff(mdoc) == ("concatenate files", "The cat utility reads ls(1).")
    assert parse_roff(".SH NAME\nbroken\n") is None


def test_stdlib_walk_finds_known_docstrings():
    sources = {s for _, _, s in iter_stdlib_pairs()}
    assert "stdlib:json" in sources  # the json package docstring has a summary and a body
    assert not any(".test." in s or s.startswith("stdlib:test.") for s in sources)


def test_build_pairs_cleans_and_dedupes():
    raw = [
        ("Add two numbers.", LONG, "stdlib:m.add"),
        ("add  two numbers", LONG + " Different.", "stdlib:m.add2"),  # same query key
        ("Subtract two numbers.", LONG, "stdlib:m.sub"),  # same document
        ("Too short.", LONG + " x", "stdlib:m.short"),  # query under 3 words
        ("Multiply two numbers.", "tiny body", "stdlib:m.mul"),  # document too short
        ("Divide two numbers.", "  " + LONG.replace(".", "!") + "  \n\n  more  ", "man:div(3)"),
    ]
    out = build_pairs(CorpusSettings(), raw)
    assert [p.source for p in out] == ["stdlib:m.add", "man:div(3)"]
    assert out[1].document.endswith("easily!\nmore")
    assert all(p.split in SPLITS for p in out)


def test_build_pairs_drops_text_that_is_query_and_document():
    raw = [
        ("Open a file for reading.", LONG, "stdlib:a"),
        ("Close the file again.", "Open a file for reading.", "stdlib:b"),
    ]
    out = build_pairs(CorpusSettings(min_document_words=3), raw)
    assert [p.source for p in out] == []


def test_settings_validate():
    with pytest.raises(DataError):
        CorpusSettings(dev_percent=60, test_percent=50)


def test_machine_corpus_size_and_sources(pairs):
    assert 1000 <= len(pairs) <= 20000
    kinds = {p.source.split(":")[0] for p in pairs}
    assert "stdlib" in kinds
    counts = {s: sum(p.split == s for p in pairs) for s in SPLITS}
    assert counts["train"] > counts["dev"] > 0 and counts["test"] > 0
    assert 0.05 < counts["test"] / len(pairs) < 0.15


def test_splits_share_no_text(pairs):
    owner: dict[str, str] = {}
    for p in pairs:
        for text in (p.query, p.document):
            key = dedupe_key(text)
            assert owner.setdefault(key, p.split) == p.split, text
    assert len({p.id for p in pairs}) == len(pairs)


def test_split_is_a_function_of_the_query(pairs):
    settings = CorpusSettings()
    assert all(corpus_mod.split_of(p.query, settings) == p.split for p in pairs[:200])


def test_cache_roundtrip_and_corruption(pairs, monkeypatch):
    path = corpus_path()
    assert path.is_file() and path.is_relative_to(corpus_mod.cache_dir())
    payload = json.loads(path.read_text())
    assert payload["fingerprint"] == corpus_fingerprint(pairs)

    def boom(settings):
        raise AssertionError("should have read the cache")

    monkeypatch.setattr(corpus_mod, "_built", boom)
    assert load_corpus() == pairs
    monkeypatch.undo()
    path.write_text("{not json")
    assert load_corpus() == pairs  # rebuilt (in-process memo) and rewritten
    assert json.loads(path.read_text())["fingerprint"] == corpus_fingerprint(pairs)


def test_empty_corpus_is_a_data_error(monkeypatch):
    monkeypatch.setattr(corpus_mod, "_built", lambda settings: ())
    with pytest.raises(DataError, match="empty"):
        load_corpus(CorpusSettings(max_man_pages=7))


def test_load_pairs(pairs):
    test = load_pairs("test")
    assert test and all(isinstance(p, Pair) and p.split == "test" for p in test)
    with pytest.raises(DataError, match="unknown split"):
        load_pairs("validation")


def test_training_jsonl(tmp_path, pairs):
    n = write_training_jsonl(tmp_path / "train.jsonl", negatives=2)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    train = load_pairs("train")
    assert n == len(rows) == len(train)
    assert set(rows[0]) == {"query", "positive", "negatives", "instruction"}
    assert all(len(r["negatives"]) == 2 and r["positive"] not in r["negatives"] for r in rows)
    plain = training_records(train[:5], negatives=0, instruction=None)
    assert all(set(r) == {"query", "positive"} for r in plain)
    # seeded: same rows again
    assert training_records(train[:50], seed=3) == training_records(train[:50], seed=3)
    with pytest.raises(DataError):
        training_records([])


@pytest.mark.parametrize("family", ["wordnet:noun.feeling", "a", "b"])
def test_a_pair_sharing_the_document_is_never_its_negative(family):
    # two example sentences of one word sense share their document; the second pair in
    # family "a" leaves only the shared document in the family, so the fallback is tested
    shared = "defensiveness: excessive sensitivity to criticism"
    pairs = [Pair("the fear of being sued magnified defensiveness", shared, family, "train"),
             Pair("his defensiveness grew", shared, family, "train"),
             Pair("an unrelated sentence", "other: another sense", "z", "train")]
    for seed in range(20):
        rows = training_records(pairs, negatives=1, seed=seed)
        assert all(r["positive"] not in r["negatives"] for r in rows)
        assert rows[0]["negatives"] == ["other: another sense"]


def test_truncate():
    assert truncate("alpha beta gamma", 11) == "alpha beta"
    assert truncate("short", 100) == "short"


def test_man_pages_from_a_fake_root(tmp_path):
    import gzip

    from pe_core.data.manpages import iter_man_pairs

    page = ".TH X 1\n.SH NAME\n{n} \\- do thing number {i}\n.SH DESCRIPTION\nIt does {i}.\n"
    (tmp_path / "man1").mkdir()
    for i in range(4):
        name = f"git-sub{i}.1.gz"
        (tmp_path / "man1" / name).write_bytes(gzip.compress(page.format(n=name, i=i).encode()))
    (tmp_path / "man1" / "other.1").write_text(page.format(n="other", i=9))
    (tmp_path / "man1" / "redirect.1").write_text(".so man1/other.1\n")
    (tmp_path / "man1" / "skipped.1.xz").write_bytes(b"\xfd7zXZ")
    (tmp_path / "man1" / "link.1").symlink_to(tmp_path / "man1" / "other.1")
    pairs = list(iter_man_pairs(10, roots=(tmp_path,), per_family=2))
    sources = sorted(s for _, _, s in pairs)
    assert len(sources) == 3 and "man:other(1)" in sources  # 2 of the git family + other
    assert all(q.startswith("do thing number") for q, _, _ in pairs)
    assert list(iter_man_pairs(10, roots=(tmp_path / "missing",))) == []
    assert len(list(iter_man_pairs(1, roots=(tmp_path,)))) == 1
