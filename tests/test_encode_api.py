"""The encode API every embedder shares (pe_core/model/encode_driver.py): named prompts,
sentence-transformers' keyword names, truncate_dim, precision, similarity, the output
check, special-token strings, training-mode restore; at the torch embedder and the
LoRA baseline (the ONNX embedder: registry/tests/test_onnx_encode.py)."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from pe_core.errors import ArgumentTypeError, ConfigError, NonFiniteOutputError, PEError
from pe_core.model import output
from pe_core.model.batching import tokenize_texts
from pe_core.model.config import DEFAULT_QUERY_INSTRUCTION, EmbedderConfig
from pe_core.testing.tiny import tiny_embedder
from pe_core.training.lora_baseline import LoraEmbedder
from pe_core.validate import PRECISIONS

TEXTS = ["a short query", "a much longer document about soft prompts and alignment", "b"]
OTHER = "Retrieve semantically similar text"


@pytest.fixture(scope="module")
def model(llama_spec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tiny_embedder(llama_spec)


@pytest.fixture(scope="module")
def lora(model):
    b = model.backbone
    return LoraEmbedder(b.model, model.tokenizer, b.spec, "last", 128)


@pytest.fixture(params=["torch", "lora"])
def embedder(request, model, lora):
    return model if request.param == "torch" else lora


# -- named prompts -----------------------------------------------------------------------
def test_config_fills_query_and_document_prompts():
    cfg = EmbedderConfig(backbone="llama", d_P=4, d_B=8)
    assert cfg.prompts == {"query": DEFAULT_QUERY_INSTRUCTION,
                           "document": cfg.document_instruction}
    none = EmbedderConfig(backbone="llama", d_P=4, d_B=8, document_instruction=None)
    assert none.prompts["document"] == ""  # no soft prompt
    own = EmbedderConfig(backbone="llama", d_P=4, d_B=8, prompts={"query": "Find code"},
                         default_prompt_name="query")
    assert own.prompts["query"] == "Find code" and "document" in own.prompts
    assert EmbedderConfig.from_dict(own.to_dict()) == own
    # the document prompt is document_instruction, also in a copy that changes it
    assert replace(own, document_instruction="Other").prompts["document"] == "Other"
    with pytest.raises(ConfigError, match=r"prompts\['document'\] 'Y' differs from "
                                          "document_instruction"):
        EmbedderConfig.from_dict({**own.to_dict(), "prompts": {"document": "Y"}})


@pytest.mark.parametrize(("kw", "match"), [
    ({"prompts": {"query": 3}}, "prompts must map names to instruction strings"),
    ({"prompts": {"": "x"}}, "prompts must map names"),
    ({"prompts": ["query"]}, "prompts must be dict"),
    ({"default_prompt_name": "nope"}, r"default_prompt_name 'nope' is not one of .*query"),
    ({"default_prompt_name": 3}, "default_prompt_name must be str or null"),
])
def test_config_refuses_bad_prompts(kw, match):
    with pytest.raises(ConfigError, match=match):
        EmbedderConfig(backbone="llama", d_P=4, d_B=8, **kw)


def test_prompt_names_give_exactly_the_instructions_vectors(embedder):
    query = embedder.encode(TEXTS, instruction=DEFAULT_QUERY_INSTRUCTION)
    np.testing.assert_array_equal(embedder.encode_query(TEXTS), query)
    np.testing.assert_array_equal(embedder.encode(TEXTS, prompt_name="query"), query)
    np.testing.assert_array_equal(embedder.encode(TEXTS, prompt=DEFAULT_QUERY_INSTRUCTION),
                                  query)
    doc = embedder.encode(TEXTS)  # the default: the document side
    np.testing.assert_array_equal(embedder.encode_document(TEXTS), doc)
    np.testing.assert_array_equal(embedder.encode(TEXTS, prompt_name="document"), doc)
    assert not np.allclose(query, doc)  # a test that could fail
    # encode_query with its own choice keeps it
    np.testing.assert_array_equal(embedder.encode_query(TEXTS, instruction=OTHER),
                                  embedder.encode(TEXTS, instruction=OTHER))


def test_default_prompt_name_is_the_default(model):
    saved = model.config
    try:
        model.config = replace(saved, default_prompt_name="query")
        np.testing.assert_array_equal(model.encode(TEXTS), model.encode_query(TEXTS))
        # the document prompt stays reachable by name
        np.testing.assert_array_equal(model.encode(TEXTS, prompt_name="document"),
                                      model.encode(TEXTS, instruction=saved.document_instruction))
    finally:
        model.config = saved


def test_an_empty_prompt_means_no_soft_prompt(model):
    saved = model.config
    try:
        model.config = replace(saved, document_instruction=None, prompts={"plain": ""})
        np.testing.assert_array_equal(model.encode(TEXTS, prompt_name="plain"),
                                      model.encode(TEXTS))
        np.testing.assert_array_equal(model.encode(TEXTS, prompt=""), model.encode(TEXTS))
    finally:
        model.config = saved


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"prompt_name": "nope"}, ConfigError, r"unknown prompt_name 'nope'.*\['document', 'query'\]"),
    ({"prompt_name": 3}, ArgumentTypeError, "prompt_name must be a string"),
    ({"prompt_name": "query", "prompt": "x"}, ConfigError, "not prompt and prompt_name"),
    ({"instruction": "x", "prompt": "y"}, ConfigError, "not instruction and prompt"),
    ({"prompt": "\ud800"}, ArgumentTypeError, "prompt holds a lone surrogate"),
    ({"prompt": ["x"]}, ArgumentTypeError, "prompt must be a string or None"),
])
def test_bad_prompt_choices(embedder, kw, error, match):
    with pytest.raises(error, match=match):
        embedder.encode(TEXTS, **kw)
    with pytest.raises(error, match=match):  # encode_query takes the same keywords
        embedder.encode_query(TEXTS, **kw)


# -- sentence-transformers' keyword names ----------------------------------------------
def test_sentence_transformers_names_mean_the_same(embedder):
    raw = embedder.encode(TEXTS, normalize=False)
    np.testing.assert_array_equal(embedder.encode(TEXTS, normalize_embeddings=False), raw)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    tensor = embedder.encode(TEXTS, convert_to_tensor=True)
    assert isinstance(tensor, torch.Tensor)
    assert isinstance(embedder.encode(TEXTS, convert_to_numpy=False), torch.Tensor)
    assert isinstance(embedder.encode(TEXTS, convert_to_numpy=True, convert_to_tensor=False),
                      np.ndarray)
    np.testing.assert_array_equal(tensor.numpy(), embedder.encode(TEXTS))
    # numpy bools are bools
    np.testing.assert_array_equal(embedder.encode(TEXTS, normalize=np.bool_(False)), raw)
    assert embedder.get_sentence_embedding_dimension() == embedder.dim
    assert embedder.similarity_fn_name == "cosine"


def test_similarity_is_the_cosine_matrix(embedder):
    a = embedder.encode(TEXTS, normalize=False)
    b = embedder.encode(TEXTS[:2], normalize=False)
    want = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
        b / np.linalg.norm(b, axis=1, keepdims=True)).T
    got = embedder.similarity(a, b)
    assert got.shape == (3, 2)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(embedder.similarity(torch.from_numpy(a), b).numpy(), want,
                               atol=1e-6)
    assert embedder.similarity(a[0], b).shape == (1, 2)


def test_similarity_of_different_widths_is_a_typed_error(embedder):
    from pe_core.errors import DimensionMismatchError

    with pytest.raises(DimensionMismatchError, match="same truncate_dim"):
        embedder.similarity(embedder.encode(TEXTS), embedder.encode(TEXTS, truncate_dim=8))


def test_a_prompt_name_passed_as_the_instruction_warns(embedder):
    """sentence-transformers' second argument is prompt_name, pe's the instruction."""
    with pytest.warns(UserWarning, match="pass prompt_name='query'") as record:
        embedder.encode(TEXTS, "query")
    assert record[0].filename == __file__  # points at the caller


# -- truncate_dim and precision ----------------------------------------------------------
def test_truncate_dim_keeps_the_first_dims_renormalised(embedder):
    raw = embedder.encode(TEXTS, normalize=False)
    cut = embedder.encode(TEXTS, truncate_dim=8)
    assert cut.shape == (3, 8)
    want = raw[:, :8] / np.linalg.norm(raw[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, want, atol=1e-6)
    np.testing.assert_array_equal(embedder.encode(TEXTS, truncate_dim=8, normalize=False),
                                  raw[:, :8])
    assert embedder.encode(TEXTS[0], truncate_dim=embedder.dim).shape == (embedder.dim,)
    with pytest.raises(ConfigError, match=f"pass 1 to {embedder.dim}"):
        embedder.encode(TEXTS, truncate_dim=embedder.dim + 1)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_is_quantize_embeddings(embedder, precision):
    from sentence_transformers import quantize_embeddings

    floats = embedder.encode(TEXTS)
    got = embedder.encode(TEXTS, precision=precision)
    want = quantize_embeddings(floats, precision)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # with calibration ranges, as quantize_embeddings(ranges=...); one text needs them
    ranges = np.stack([floats.min(0), floats.max(0)]) if "int8" in precision else None
    alone = embedder.encode(TEXTS[:1])  # a batch of one pads differently: its own floats
    one = embedder.encode(TEXTS[0], precision=precision, ranges=ranges)
    np.testing.assert_array_equal(one, quantize_embeddings(alone, precision,
                                                           ranges=ranges)[0])
    if ranges is not None:
        np.testing.assert_array_equal(output._quantize(alone, precision, ranges)[0], one)
    empty = embedder.encode([], precision=precision)
    assert empty.shape == (0, want.shape[1]) and empty.dtype == want.dtype


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"texts": "one", "precision": "int8"}, ConfigError, "one vector has none.*ranges="),
    ({"precision": "uint8", "ranges": np.zeros((2, 5))}, ConfigError, r"shape \(2, 32\)"),
    ({"precision": "int8", "truncate_dim": 8, "ranges": np.zeros((2, 32))}, ConfigError,
     r"shape \(2, 8\)"),
    ({"precision": "binary", "ranges": np.zeros((2, 32))}, ConfigError, "only applies"),
    ({"precision": "int8", "ranges": np.full((2, 32), np.nan)}, ConfigError, "finite"),
    ({"precision": "int8", "ranges": np.stack([np.ones(32), np.zeros(32)])}, ConfigError,
     r"ranges\[1\] >= ranges\[0\]"),
    ({"precision": "int8", "ranges": "wide"}, ArgumentTypeError, "got str"),
])
def test_bad_quantization_ranges(embedder, kw, error, match):
    kw = dict(kw)
    with pytest.raises(error, match=match):
        embedder.encode(kw.pop("texts", TEXTS), **kw)


@pytest.mark.parametrize("precision", PRECISIONS[1:])
def test_the_numpy_quantizer_is_sentence_transformers_definition(precision):
    """pe-core without sentence-transformers computes the same arrays."""
    from sentence_transformers import quantize_embeddings

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((40, 37)).astype(np.float32)
    vectors[:, 3] = 0.5  # a constant dimension (a zero step)
    want = quantize_embeddings(vectors, precision)
    got = output._quantize(vectors, precision)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


# -- inputs and outputs the driver checks once -------------------------------------------
def test_special_token_strings_in_a_text_are_text(model, lora, monkeypatch):
    tok = model.tokenizer
    specials = {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}
    ids = tokenize_texts(tok, ["a </s> b <pad> <s>"])[0]
    assert not specials & set(ids)
    seen = []
    for embedder in (model, lora):
        real = embedder.forward
        monkeypatch.setattr(embedder, "forward",
                            lambda ids, mask, *a, _real=real, **k: seen.append(
                                ids[mask.bool()]) or _real(ids, mask, *a, **k))
        embedder.encode(["x </s>", "<pad><pad>"])
    assert len(seen) == 2
    for ids in seen:  # the real tokens, not the padding
        assert not specials & set(ids.tolist())


def test_lone_surrogates_are_refused_at_every_embedder(embedder):
    with pytest.raises(ArgumentTypeError, match=r"texts\[1\] holds a lone surrogate"):
        embedder.encode(["fine", "bad \udc80"])
    with pytest.raises(ArgumentTypeError, match="instruction holds a lone surrogate"):
        embedder.encode(["fine"], instruction="\ud800")


def test_non_finite_vectors_never_leave(model):
    weight = model.alignment.weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight[0, 0] = float("nan")
        model.clear_prompt_cache()
        with pytest.raises(NonFiniteOutputError, match=r"first: texts\[0\].*alignment"):
            model.encode(TEXTS, instruction=OTHER)
        assert isinstance(NonFiniteOutputError("x"), PEError)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
        model.clear_prompt_cache()
    assert np.isfinite(model.encode(TEXTS, instruction=OTHER)).all()


def test_non_finite_vectors_never_leave_the_lora_baseline(lora):
    weight = lora.model.get_input_embeddings().weight
    saved = weight.detach().clone()
    try:
        with torch.no_grad():
            weight.fill_(float("inf"))
        with pytest.raises(NonFiniteOutputError, match="NaN or inf for 3 of 3 texts"):
            lora.encode(TEXTS)
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_training_mode_is_restored_even_after_an_error(embedder, monkeypatch):
    embedder.train()
    try:
        embedder.encode(TEXTS)
        assert embedder.training
        monkeypatch.setattr(embedder, "forward", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            embedder.encode(TEXTS)
        assert embedder.training
    finally:
        embedder.eval()


def test_encode_runs_in_eval_mode(model, monkeypatch):
    """Dropout off while encoding: the vectors of a model left in training mode are
    those of eval mode."""
    want = model.encode(TEXTS)
    modes = []
    real = model.forward
    monkeypatch.setattr(model, "forward",
                        lambda *a, **k: modes.append(model.training) or real(*a, **k))
    model.train()
    try:
        np.testing.assert_array_equal(model.encode(TEXTS), want)
    finally:
        model.eval()
    assert modes == [False]


# -- load by reference, save everything --------------------------------------------------
def test_save_then_load_by_reference_alone(tiny_folders, tmp_path):
    import json

    import pe_core

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                             prompting=str(tiny_folders["prompting"]), device="cpu",
                             allow_untrained=True)
    with torch.no_grad():  # a Prompting LLM unlike the one in tiny_folders
        first.prompting.model.get_input_embeddings().weight.mul_(1.5)
    first.clear_prompt_cache()
    folder = first.save(tmp_path / "m")
    assert (folder / "prompting" / "config.json").is_file()  # the trained Prompting LLM
    saved = json.loads((folder / "pe_config.json").read_text())
    assert saved["prompts"]["query"] == DEFAULT_QUERY_INSTRUCTION
    again = pe_core.load(str(folder), device="cpu")  # the backbone from pe_config.json
    assert again.config.backbone == "llama"
    np.testing.assert_allclose(again.encode_query(TEXTS), first.encode_query(TEXTS),
                               atol=1e-6)
    with pytest.raises(ConfigError, match="trained for backbone 'llama', not 'qwen'"):
        pe_core.load(str(folder), backbone="qwen", device="cpu")
    with pytest.raises(ConfigError, match="name the model once"):
        pe_core.load(str(folder), alignment=str(folder), device="cpu")


@pytest.mark.parametrize(("args", "kw", "error", "match"), [
    ((), {}, ConfigError, "pass a model reference"),
    ((3,), {}, ArgumentTypeError, "model reference must be a string or path, got int"),
    (("llama",), {"backbone": "qwen"}, ConfigError, "name the backbone once"),
])
def test_load_reference_errors(args, kw, error, match):
    import pe_core

    with pytest.raises(error, match=match):
        pe_core.load(*args, device="cpu", **kw)
