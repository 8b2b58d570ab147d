"""GGUF files as models: weights and tokens round-trip exactly through pe's cache, and every
way a GGUF can be wrong is a typed error that leaves nothing half-written in the cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import pe_core
from pe_core.checkpoints import gguf
from pe_core.errors import (
    CorruptFileError,
    MissingExtraError,
    MissingFileError,
    ModelTypeMismatchError,
)
from pe_core.model_refs import resolve_model
from pe_core.testing.tiny_gguf import SP_TEXT, write_tiny_gguf


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "pe-cache"))
    return tmp_path / "pe-cache"


def _cache_entries(cache: Path) -> list[str]:
    root = cache / "gguf"
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) \
        if root.is_dir() else []


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_gguf_weights_and_tokens_round_trip_exactly(kind, tmp_path, cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, model, ref = write_tiny_gguf(tmp_path / f"tiny-{kind}.gguf", kind)
    folder = resolve_model(str(path))
    assert folder.parent == cache / "gguf" and (folder / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded[name], tensor), name  # F32 in the file: exact
    tok = AutoTokenizer.from_pretrained(folder)
    for text in SP_TEXT + ["the fox is quick"]:
        expected = ref.encode(text).tokens if kind == "llama" else ref.tokenize(text)
        assert tok.tokenize(text) == expected, text
        ids = tok(text)["input_ids"]
        assert tok.decode(ids, skip_special_tokens=True) == text
    # BOS exactly as the file's add_bos_token says (set for the llama kind only here)
    assert (tok("fox")["input_ids"][0] == tok.bos_token_id) == (kind == "llama")
    # the second resolve is the cached folder, not another dequantization
    assert resolve_model(str(path)) == folder and _cache_entries(cache) == [folder.name]


def test_sentencepiece_byte_fallback_and_spaces(tmp_path):
    from transformers import AutoTokenizer

    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    tok = AutoTokenizer.from_pretrained(resolve_model(str(path)))
    pieces = tok.tokenize("the wörd")
    assert pieces[0] == "the" and "<0xC3>" in pieces and "<0xB6>" in pieces
    for text in ("the wörd", "two  spaces", " leading"):
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_sentencepiece_merges_rank_by_the_joined_pieces_score():
    from pe_core.checkpoints.gguf_tokenizer import sentencepiece_merges

    pieces = ["a", "b", "c", "ab", "bc", "abc"]
    scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0]
    merges = sentencepiece_merges(pieces, scores, [1] * 6)
    assert merges == [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]  # ties: longer left


def test_gguf_loads_as_backbone_and_prompting(tmp_path):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pe_core.load(backbone="llama", model=str(path), prompting=str(path),
                             device="cpu", allow_untrained=True)
    out = model.encode(["the quick fox"], instruction="Retrieve a passage")
    assert out.shape == (1, 32)
    assert model.config.model_id == str(path)


def test_wrong_family_is_named_before_dequantizing(tmp_path, cache):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    with pytest.raises(ModelTypeMismatchError, match="backbone='llama'"):
        pe_core.load(backbone="gemma", model=str(path))
    assert _cache_entries(cache) == []


def test_truncated_gguf_is_corrupt(tmp_path, cache):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        resolve_model(str(path))
    path.write_bytes(b"not a gguf file at all, just text" * 10)
    with pytest.raises(CorruptFileError):
        resolve_model(str(path))
    assert _cache_entries(cache) == []


def test_gguf_without_tokenizer_metadata(tmp_path, cache):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama", with_tokenizer=False)
    with pytest.raises(MissingFileError, match="carries no tokenizer"):
        resolve_model(str(path))
    assert _cache_entries(cache) == []


def test_sha256_mismatch(tmp_path):
    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    with pytest.raises(CorruptFileError, match="expected 000"):
        gguf.gguf_folder(path, sha256="0" * 64)


def test_missing_extra_names_it(tmp_path, monkeypatch):
    import importlib.util

    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pe-core\[gguf\]"):
        resolve_model(str(path))


def test_interrupted_dequantization_leaves_nothing(tmp_path, cache, monkeypatch):
    from pe_core.checkpoints import verified

    path, _, _ = write_tiny_gguf(tmp_path / "tiny.gguf", "llama")
    real = verified.load_causal_lm

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(verified, "load_causal_lm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(path))
    assert _cache_entries(cache) == []
    monkeypatch.setattr(verified, "load_causal_lm", real)
    folder = resolve_model(str(path))
    assert _cache_entries(cache) == [folder.name]


def test_missing_gguf_file(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        resolve_model(str(tmp_path / "nope.gguf"))


def test_hub_gguf_ref_parsing(tmp_path):
    assert gguf.split_hub_ref("org/repo@v1:dir/m.gguf") == ("org/repo", "v1", "dir/m.gguf")
    assert gguf.split_hub_ref("org/repo:m.gguf") == ("org/repo", None, "m.gguf")
    assert gguf.split_hub_ref(str(tmp_path / "m.gguf")) is None
