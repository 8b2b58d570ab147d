"""Local mteb tasks and the mteb encoder wrapper, evaluated for real with mteb.evaluate."""

from __future__ import annotations

import os
import re
import zlib

import numpy as np
import pytest

from pe_core.errors import DataError


@pytest.fixture(scope="module", autouse=True)
def pe_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("pe-cache")
        mp.setenv("PE_CACHE", str(path))
        yield path


class HashedBagOfWords:
    """A deterministic toy embedder with the pe encode signature; records its calls.

    Word counts hashed into 256 buckets, plus one dimension set from a hash of the whole
    text: two different texts with the same bag of words (or any two documents a query
    scores equally) would tie exactly, and a tie is then ordered by the rounding of the
    CPU's matrix product, which differs between CPUs (AVX-512 against AVX2). The extra
    dimension orders them by a margin well above that rounding (on the WordNet test
    split: at least 2.4e-6 in cosine around every relevant document in a top 10).
    """

    name = "hashed-bow"
    dim = 257

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []

    def encode(
        self, texts, instruction=None, batch_size=32, normalize=True, show_progress_bar=None
    ):
        self.calls.append((len(texts), instruction))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[i, zlib.crc32(word.encode()) % (self.dim - 1)] += 1.0
            out[i, -1] = 0.5 * (1 + zlib.crc32(text.encode()) / 2**32)  # the tie-breaker
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out


@pytest.fixture(scope="module")
def tasks(pe_cache):
    from pe_core.eval import get_tasks

    return get_tasks(["PELocalDocstringRetrieval", "PELocalDocstringPairClassification"])


def test_metadata(tasks):
    from pe_core.eval import LOCAL_TASK_NAMES, LOCAL_TASKS

    assert tuple(LOCAL_TASKS) == LOCAL_TASK_NAMES
    for task in tasks:
        md = task.metadata
        assert md.name in LOCAL_TASK_NAMES
        assert md.eval_langs == ["eng-Latn"] and md.eval_splits == ["test"]
        assert md.dataset["path"] and md.dataset["revision"]
        assert md.description
    assert tasks[0].metadata.main_score == "ndcg_at_10"
    assert tasks[1].metadata.main_score == "max_ap"


def test_retrieval_data(tasks):
    task = tasks[0]
    task.load_data()
    test, dev = task.dataset["default"]["test"], task.dataset["default"]["dev"]
    q_ids = list(test["queries"]["id"])
    d_ids = set(test["corpus"]["id"])
    assert len(q_ids) == len(set(q_ids)) == len(test["relevant_docs"])
    assert all(
        set(rel) <= d_ids and list(rel.values()) == [1] for rel in test["relevant_docs"].values()
    )
    assert not set(test["queries"]["text"]) & set(dev["queries"]["text"])
    assert not set(test["corpus"]["text"]) & set(dev["corpus"]["text"])


def test_pair_classification_data(tasks):
    task = tasks[1]
    task.load_data()
    rows = task.dataset["test"]
    assert sum(rows["labels"]) * 2 == len(rows)
    assert set(rows.column_names) == {"sentence1", "sentence2", "labels"}


def test_mteb_evaluate_with_wrapper(tasks):
    import mteb

    from pe_core.eval import MTEBEncoder
    from pe_core.eval.instructions import TASK_INSTRUCTIONS

    model = HashedBagOfWords()
    encoder = MTEBEncoder(model)
    assert isinstance(encoder, mteb.models.EncoderProtocol)
    assert encoder.mteb_model_meta.name == "pe/hashed-bow"
    assert encoder.mteb_model_meta.embed_dim == HashedBagOfWords.dim
    result = mteb.evaluate(encoder, tasks, cache=None, show_progress_bar=False)
    scores = {tr.task_name: tr.scores["test"][0] for tr in result.task_results}
    ndcg = scores["PELocalDocstringRetrieval"]["ndcg_at_10"]
    ap = scores["PELocalDocstringPairClassification"]["max_ap"]
    assert 0.1 < ndcg <= 1.0  # bag of words finds many documents by shared words
    assert 0.5 < ap <= 1.0
    instruction = TASK_INSTRUCTIONS["PELocalDocstringRetrieval"]
    # queries are instructed, documents are not, on both tasks
    assert {ins for _, ins in model.calls} == {instruction, None}
    n_test = len(tasks[0].dataset["default"]["test"]["queries"])
    assert (n_test, instruction) in model.calls and (n_test, None) in model.calls
    # cache=None writes no results
    results_dir = os.path.join(os.environ["MTEB_CACHE"], "results")
    assert not os.path.exists(results_dir) or not os.listdir(results_dir)


def test_dev_split_and_custom_instructions(pe_cache):
    import mteb

    from pe_core.eval import MTEBEncoder, get_tasks

    model = HashedBagOfWords()
    encoder = MTEBEncoder(model, instructions={"PELocalDocstringRetrieval": "find the docs"})
    (task,) = get_tasks("PELocalDocstringRetrieval", eval_splits=["dev"])
    result = mteb.evaluate(encoder, [task], cache=None, show_progress_bar=False)
    assert list(result.task_results[0].scores) == ["dev"]
    assert {ins for _, ins in model.calls} == {"find the docs", None}


def test_wrapper_encodes_each_distinct_text_once(pe_cache):
    """An STS task lists each document once per pair: the model sees it once, and every
    row still gets its own text's vector, in mteb's order."""
    from types import SimpleNamespace as NS

    from pe_core.eval import MTEBEncoder

    model = HashedBagOfWords()
    texts = ["a cat sat", "a dog ran", "a cat sat", "the end", "a dog ran", "a cat sat"]
    batches = [{"text": texts[:4]}, {"text": texts[4:]}]
    got = MTEBEncoder(model).encode(batches, task_metadata=NS(name="Foo", type="STS",
                                                             prompt=None),
                                    hf_split="test", hf_subset="default")
    assert [n for n, _ in model.calls] == [3]  # three distinct texts, one call
    np.testing.assert_array_equal(got, model.encode(texts))


def test_instruction_defaults():
    from types import SimpleNamespace as NS

    from pe_core.eval.instructions import FALLBACK_INSTRUCTION, TYPE_INSTRUCTIONS, instruction_for

    assert (
        instruction_for(NS(name="Foo", type="Clustering", prompt=None))
        == TYPE_INSTRUCTIONS["Clustering"]
    )
    assert instruction_for(NS(name="Foo", type="Retrieval", prompt={"query": "Q"}), "query") == "Q"
    assert instruction_for(NS(name="Foo", type="Retrieval", prompt="P"), "document") is None
    assert instruction_for(NS(name="Foo", type="Unknown", prompt=None)) == FALLBACK_INSTRUCTION


def test_wrapper_rejects_non_encoders():
    from pe_core.eval import MTEBEncoder

    with pytest.raises(TypeError, match="encode"):
        MTEBEncoder(object())


def test_get_tasks_falls_back_to_mteb_and_reports_unknown():
    from pe_core.eval import get_tasks

    (task,) = get_tasks(["STSBenchmark"])  # installed with mteb; its data is not loaded here
    assert task.metadata.name == "STSBenchmark"
    with pytest.raises(DataError, match="PELocalDocstringRetrieval"):
        get_tasks(["NoSuchTaskAnywhere"])


def test_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, pe_core.eval, pe_core.data; print('mteb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
