"""OnnxEmbedder.encode through the shared encode driver: the keywords, input and output
checks of the torch embedder (tests/test_encode_api.py), on one exported tiny graph."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if os.environ.get("PE_REQUIRE_ONNX") == "1":
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
else:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")

from pe_core.errors import ArgumentTypeError, ConfigError, NonFiniteOutputError
from pe_core.model.config import DEFAULT_QUERY_INSTRUCTION
from pe_core.validate import PRECISIONS

TEXTS = ["Return the sum of the numbers.", "fox", "Open a file for reading and writing."]
TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(torch embedder, its ONNX graph for the "query" prompt's instruction)."""
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_export import export_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedder = tiny_embedder(get_backbone("llama"))
        folder = export_onnx(embedder, DEFAULT_QUERY_INSTRUCTION,
                             Path(tmp_path_factory.mktemp("onnx")) / "g", optimize=False)
    return embedder, OnnxEmbedder(folder, providers=["CPUExecutionProvider"])


def test_named_prompts_route_to_the_baked_instruction(pair: Any) -> None:
    embedder, onnx = pair
    want = embedder.encode_query(TEXTS)
    for got in (onnx.encode(TEXTS), onnx.encode_query(TEXTS),
                onnx.encode(TEXTS, prompt_name="query"),
                onnx.encode(TEXTS, prompt=DEFAULT_QUERY_INSTRUCTION)):
        assert np.abs(got - want).max() <= TOL
    for call in (lambda: onnx.encode_document(TEXTS),
                 lambda: onnx.encode(TEXTS, prompt_name="document")):
        with pytest.raises(ConfigError, match="one graph per instruction"):
            call()
    with pytest.raises(ConfigError, match="baked in, not no instruction"):
        onnx.encode(TEXTS, prompt="")  # "" is no soft prompt
    with pytest.raises(ConfigError, match=r"unknown prompt_name 'nope'"):
        onnx.encode(TEXTS, prompt_name="nope")
    assert onnx.get_sentence_embedding_dimension() == embedder.dim
    assert onnx.similarity(want, want).shape == (3, 3)


def test_truncate_dim_precision_and_st_names(pair: Any) -> None:
    # pe's one quantizer (tested against sentence-transformers' in the core env, which has it)
    from pe_core.model.output import quantize

    _, onnx = pair
    full = onnx.encode(TEXTS)
    cut = onnx.encode(TEXTS, truncate_dim=8)
    np.testing.assert_allclose(
        cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    for precision in PRECISIONS:
        np.testing.assert_array_equal(onnx.encode(TEXTS, precision=precision),
                                      quantize(full, precision))
    np.testing.assert_array_equal(onnx.encode(TEXTS, normalize=np.bool_(True)), full)
    assert onnx.encode(TEXTS, convert_to_tensor=True).shape == (3, onnx.dim)
    for kw in ({"normalize": False}, {"normalize_embeddings": False}):
        with pytest.raises(ConfigError, match="normalize=False needs the torch embedder"):
            onnx.encode(TEXTS, **kw)
    with pytest.raises(ConfigError, match="more than the model's"):
        onnx.encode(TEXTS, truncate_dim=onnx.dim + 1)


def test_inputs_checked_and_special_tokens_read_as_text(pair: Any, monkeypatch: Any) -> None:
    _, onnx = pair
    with pytest.raises(ArgumentTypeError, match=r"texts\[1\] holds a lone surrogate"):
        onnx.encode(["ok", "\ud800"])
    seen = []
    real = onnx.run
    monkeypatch.setattr(onnx, "run", lambda ids, mask: seen.append(ids[mask == 1]) or real(
        ids, mask))
    onnx.encode(["a </s> b", "<pad> <s>"])
    tok = onnx.tokenizer
    specials = {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}
    assert seen and not specials & set(np.concatenate(seen).tolist())


def test_non_finite_outputs_never_leave(pair: Any, monkeypatch: Any) -> None:
    _, onnx = pair
    monkeypatch.setattr(onnx, "run", lambda ids, mask: np.full((len(ids), onnx.dim), np.nan,
                                                               dtype=np.float32))
    with pytest.raises(NonFiniteOutputError, match="NaN or inf for 3 of 3 texts"):
        onnx.encode(TEXTS)
