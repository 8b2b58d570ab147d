"""A saved pe model is a sentence-transformers model (issue 35, point 1), tested with the
real sentence-transformers and langchain-huggingface: the folder's files, every encode
entry point against pe's own ``encode``, and pe's typed errors for a damaged folder."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer  # noqa: E402

from pe_core.errors import ConfigError, CorruptFileError, MissingFileError  # noqa: E402
from pe_core.integrations.st_files import MODULE_CLASS, MODULES_NAME, ST_CONFIG_NAME  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["open a file for reading", "the quick brown fox", "sum",
         "Return the sum of the numbers. " * 6, "Soft prompts steer a frozen language model."]
ATOL = 1e-5


@pytest.fixture(scope="module")
def saved(tiny_folders, tmp_path_factory):
    """(pe model, folder it was saved to): the tiny llama with a third named prompt."""
    import pe_core

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pe_core.load("llama", model=str(tiny_folders["model"]),
                             prompting=str(tiny_folders["prompting"]), allow_untrained=True)
    model.config.prompts["code"] = "Retrieve the documentation of this code"
    folder = model.save(tmp_path_factory.mktemp("pe") / "model")
    return model, folder


@pytest.fixture(scope="module")
def st(saved):
    _, folder = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no "needs trust_remote_code" warning
        return SentenceTransformer(str(folder), device="cpu")


def test_save_writes_a_sentence_transformers_folder(saved):
    model, folder = saved
    modules = json.loads((folder / MODULES_NAME).read_text())
    assert modules == [{"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS}]
    cfg = json.loads((folder / ST_CONFIG_NAME).read_text())
    assert cfg["prompts"] == model.config.prompts  # name -> pe instruction, not a prefix
    assert cfg["prompts"]["query"] and cfg["prompts"]["document"]
    assert cfg["similarity_fn_name"] == "cosine"
    assert cfg["default_prompt_name"] is None


def test_loads_without_trust_remote_code(st, saved):
    model, _ = saved
    assert st.prompts == model.config.prompts
    assert st.similarity_fn_name == "cosine"
    assert st.get_embedding_dimension() == model.dim
    assert st.max_seq_length == model.config.max_length


@pytest.mark.parametrize("st_kwargs, pe_kwargs", [
    ({}, {}),                                               # the model's default prompt
    ({"prompt_name": "query"}, {"prompt_name": "query"}),
    ({"prompt_name": "code"}, {"prompt_name": "code"}),
    ({"prompt": "Find a similar sentence"}, {"instruction": "Find a similar sentence"}),
    ({"prompt": ""}, {"instruction": None, "prompt": ""}),  # "": no soft prompt
])
def test_encode_equals_pe_encode(st, saved, st_kwargs, pe_kwargs):
    model, _ = saved
    pe_kwargs = {k: v for k, v in pe_kwargs.items() if v is not None}
    got = st.encode(TEXTS, batch_size=2, **st_kwargs)
    want = model.encode(TEXTS, **pe_kwargs)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    # one string in, one vector out, as both libraries do
    np.testing.assert_allclose(st.encode(TEXTS[0], **st_kwargs), want[0], atol=ATOL, rtol=0)


def test_prompts_reach_the_soft_prompt_not_the_text(st, saved):
    model, _ = saved
    query = st.encode(TEXTS, prompt_name="query")
    # prepending the instruction to the text (what sentence-transformers does with a
    # plain Transformer module) would give other vectors
    prepended = model.encode([model.config.prompts["query"] + t for t in TEXTS])
    assert np.abs(query - prepended).max() > 1e-3
    assert np.abs(query - st.encode(TEXTS, prompt_name="document")).max() > 1e-3


def test_encode_query_and_document(st, saved):
    model, _ = saved
    np.testing.assert_allclose(st.encode_query(TEXTS), model.encode_query(TEXTS), atol=ATOL)
    np.testing.assert_allclose(st.encode_document(TEXTS), model.encode_document(TEXTS),
                               atol=ATOL)


def test_truncate_dim_and_similarity(st, saved):
    model, _ = saved
    full = model.encode(TEXTS)
    cut = st.encode(TEXTS, truncate_dim=8)
    # sentence-transformers cuts the unit vector; pe re-normalises the prefix
    np.testing.assert_allclose(cut, full[:, :8], atol=ATOL)
    np.testing.assert_allclose(st.encode(TEXTS, truncate_dim=8, normalize_embeddings=True),
                               model.encode(TEXTS, truncate_dim=8), atol=ATOL)
    q, d = st.encode_query(TEXTS, truncate_dim=8), st.encode_document(TEXTS, truncate_dim=8)
    want = model.similarity(model.encode_query(TEXTS, truncate_dim=8),
                            model.encode_document(TEXTS, truncate_dim=8))
    np.testing.assert_allclose(st.similarity(q, d).numpy(), want, atol=ATOL)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precision(st, saved, precision):
    model, _ = saved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "buckets from 5 embeddings"
        got = st.encode(TEXTS, precision=precision)
        want = model.encode(TEXTS, precision=precision)
    assert got.dtype == want.dtype and got.shape == want.shape
    # the same quantize_embeddings on floats equal to 1e-7: a value on a bucket edge may
    # land one bucket over; bits agree
    bound = 1 if precision.endswith("int8") else 0
    assert np.abs(got.astype(int) - want.astype(int)).max() <= bound


def test_convert_to_tensor_and_moves(st, saved):
    model, _ = saved
    got = st.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(got, torch.Tensor)
    # the soft prompts cached by that call stay on the old device unless a move drops them
    assert st[0].embedder._prompt_cache
    st.to("cpu")
    assert not st[0].embedder._prompt_cache
    np.testing.assert_allclose(st.encode(TEXTS), model.encode(TEXTS), atol=ATOL)


def test_sentence_transformers_save_round_trip(st, saved, tmp_path):
    model, _ = saved
    st.save(str(tmp_path / "again"))
    again = SentenceTransformer(str(tmp_path / "again"), device="cpu")
    np.testing.assert_allclose(again.encode_query(TEXTS), model.encode_query(TEXTS), atol=ATOL)
    assert again.prompts == model.config.prompts


def test_langchain_huggingface_embeddings(saved):
    from langchain_huggingface import HuggingFaceEmbeddings

    model, folder = saved
    plain = HuggingFaceEmbeddings(model_name=str(folder), model_kwargs={"device": "cpu"})
    np.testing.assert_allclose(np.array(plain.embed_documents(TEXTS)), model.encode(TEXTS),
                               atol=ATOL)
    prompted = HuggingFaceEmbeddings(
        model_name=str(folder), model_kwargs={"device": "cpu"},
        encode_kwargs={"prompt_name": "document"},
        query_encode_kwargs={"prompt_name": "query"},
    )
    np.testing.assert_allclose(np.array(prompted.embed_query(TEXTS[0])),
                               model.encode_query(TEXTS[0]), atol=ATOL)
    np.testing.assert_allclose(np.array(prompted.embed_documents(TEXTS)),
                               model.encode_document(TEXTS), atol=ATOL)


def test_pushed_artifact_loads_in_sentence_transformers(saved, tmp_path, monkeypatch):
    pe_registry = pytest.importorskip("pe_registry")
    model, folder = saved
    monkeypatch.setenv("PE_REGISTRY", str(tmp_path / "registry"))
    entry = pe_registry.push(folder, "pushed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pushed = SentenceTransformer(str(entry.path), device="cpu")
    np.testing.assert_allclose(pushed.encode_query(TEXTS), model.encode_query(TEXTS),
                               atol=ATOL)


# -- a damaged folder: pe's typed error, not one from inside sentence-transformers ----
def _copy(saved, tmp_path):
    _, folder = saved
    return shutil.copytree(folder, tmp_path / "copy")


def test_missing_pe_config_is_missing_file_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "pe_config.json").unlink()
    with pytest.raises(MissingFileError, match="pe_config.json"):
        SentenceTransformer(str(folder), device="cpu")


def test_missing_alignment_weights_is_missing_file_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "alignment.safetensors").unlink()
    with pytest.raises(MissingFileError, match="alignment.safetensors"):
        SentenceTransformer(str(folder), device="cpu")


def test_truncated_alignment_is_corrupt_file_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    weights = folder / "alignment.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CorruptFileError):
        SentenceTransformer(str(folder), device="cpu")


def test_garbled_pe_config_is_a_config_error(saved, tmp_path):
    folder = _copy(saved, tmp_path)
    (folder / "pe_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="pe_config.json"):
        SentenceTransformer(str(folder), device="cpu")


def test_other_backend_is_a_config_error(saved):
    _, folder = saved
    with pytest.raises(ConfigError, match="pe export onnx"):
        SentenceTransformer(str(folder), device="cpu", backend="onnx")
