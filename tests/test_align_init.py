"""Where `pe align` starts: the token least-squares map, carrying a trained alignment to
a new backbone, reading a checkpoint's token-embedding table, and the fallbacks."""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pe_core
from pe_core.checkpoints.token_tables import read_token_embeddings
from pe_core.errors import ConfigError, CorruptFileError, DimensionMismatchError, MissingFileError
from pe_core.model.alignment import Alignment, token_map

WORDS = "alpha beta gamma delta file open read write sum number fox dog python class".split()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    rng = random.Random(0)
    rows = []
    for i in range(32):
        words = rng.sample(WORDS, 3)
        rows.append({"query": " ".join(words), "positive": " ".join(words + rng.sample(WORDS, 3)),
                     "instruction": "Retrieve the documentation" if i % 2 else "Find a match"})
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def qwen_folders(tmp_path_factory):
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    return save_tiny_folders(get_backbone("qwen"), tmp_path_factory.mktemp("qwen"))


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, tiny_folders, pairs):
    """A 2-step `pe train` run on a copy of the tiny llama (so a test may delete it)."""
    root = tmp_path_factory.mktemp("src")
    model = shutil.copytree(tiny_folders["model"], root / "llama")
    pe_core.train(str(pairs), backbone="llama", model=str(model),
                  prompting=str(tiny_folders["prompting"]), out=root / "run", steps=2,
                  batch_size=8, lr=1e-3, alignment_lr=1e-1, progress=False)
    return root / "run"


def _align(source, pairs, qwen_folders, out, **kw):
    return pe_core.align(source, str(pairs), backbone="qwen", model=str(qwen_folders["model"]),
                         out=out, steps=1, batch_size=8, progress=False, **kw)


# -- the maps ---------------------------------------------------------------------------
def test_token_map_recovers_a_linear_map_over_shared_tokens():
    g = torch.Generator().manual_seed(0)
    source, m = torch.randn(60, 8, generator=g), torch.randn(8, 6, generator=g)
    target = torch.randn(70, 6, generator=g)
    # tokens 0..49 are shared (target rows in another order); the rest are not
    perm = torch.randperm(50, generator=g)
    target[perm] = source[:50] @ m
    s_vocab = {f"t{i}": i for i in range(60)}
    t_vocab = {f"t{i}": int(perm[i]) for i in range(50)} | {f"u{i}": 50 + i for i in range(20)}
    fit = token_map(source, target, s_vocab, t_vocab, ridge=1e-10)
    torch.testing.assert_close(fit, m, atol=1e-5, rtol=1e-5)
    assert token_map(source, target, s_vocab, t_vocab, min_shared=51) is None


def test_carried_alignment_equals_alignment_then_map():
    torch.manual_seed(0)
    a = Alignment(5, 7, bias=True)
    with torch.no_grad():
        a.bias.normal_()
    m = torch.randn(7, 3)
    carried = a.carried_to(m)
    soft = torch.randn(4, 5)
    torch.testing.assert_close(carried(soft), a(soft) @ m)
    assert (carried.d_P, carried.d_B) == (5, 3)
    with pytest.raises(DimensionMismatchError, match="7"):
        a.carried_to(torch.randn(6, 3))


# -- reading a checkpoint's table -------------------------------------------------------
@pytest.mark.parametrize("layout", ["single", "sharded", "bin"])
def test_read_token_embeddings_without_building_the_model(layout, llama_spec, tmp_path):
    from pe_core.testing.tiny import tiny_backbone, tiny_tokenizer

    model = tiny_backbone(llama_spec, "llama", tiny_tokenizer())
    kw = {"single": {}, "sharded": {"max_shard_size": "20KB"},
          "bin": {"safe_serialization": False}}[layout]
    model.save_pretrained(tmp_path, **kw)
    index = (tmp_path / "model.safetensors.index.json").is_file()
    assert index == (layout == "sharded")
    torch.testing.assert_close(read_token_embeddings(tmp_path),
                               model.get_input_embeddings().weight.detach())


def test_read_token_embeddings_from_an_empty_folder_is_typed(tmp_path):
    with pytest.raises(MissingFileError, match="token-embedding table"):
        read_token_embeddings(tmp_path)


# -- pe align ---------------------------------------------------------------------------
def test_align_starts_from_the_carried_source_alignment(source_run, pairs, qwen_folders,
                                                        tiny_folders, tmp_path):
    from transformers import AutoTokenizer

    result = _align(source_run, pairs, qwen_folders, tmp_path / "q", alignment_lr=1e-12)
    model = result.model
    source_tokenizer = AutoTokenizer.from_pretrained(tiny_folders["model"])
    m = token_map(read_token_embeddings(source_run.parent / "llama"),
                  model.backbone.embedding_table, source_tokenizer, model.tokenizer)
    expected = Alignment.load(source_run / "alignment.safetensors").weight.detach() @ m
    start = load_file(tmp_path / "q" / "alignment.safetensors")["weight"]
    torch.testing.assert_close(start, expected, atol=1e-5, rtol=1e-5)
    ls = Alignment.least_squares(model.prompting.embedding_table, model.backbone.embedding_table,
                                 model.prompting.tokenizer, model.tokenizer)
    assert not torch.allclose(start, ls.weight.detach(), atol=1e-3)


def test_align_init_tokens_starts_from_the_token_fit(source_run, pairs, qwen_folders, tmp_path):
    result = _align(source_run, pairs, qwen_folders, tmp_path / "q", init="tokens",
                    alignment_lr=1e-12)
    model = result.model
    ls = Alignment.least_squares(model.prompting.embedding_table, model.backbone.embedding_table,
                                 model.prompting.tokenizer, model.tokenizer)
    start = load_file(tmp_path / "q" / "alignment.safetensors")["weight"]
    torch.testing.assert_close(start, ls.weight.detach(), atol=1e-5, rtol=1e-5)


def test_align_falls_back_to_the_token_fit_when_the_source_model_is_gone(
    source_run, pairs, qwen_folders, tmp_path
):
    run = shutil.copytree(source_run, tmp_path / "run")
    cfg = json.loads((run / "pe_config.json").read_text())
    cfg["model_id"] = str(tmp_path / "no-such-model")
    (run / "pe_config.json").write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="cannot carry"):
        result = _align(run, pairs, qwen_folders, tmp_path / "q", alignment_lr=1e-12)
    model = result.model
    ls = Alignment.least_squares(model.prompting.embedding_table, model.backbone.embedding_table,
                                 model.prompting.tokenizer, model.tokenizer)
    start = load_file(tmp_path / "q" / "alignment.safetensors")["weight"]
    torch.testing.assert_close(start, ls.weight.detach(), atol=1e-5, rtol=1e-5)


def test_align_with_a_corrupt_source_alignment_is_typed(source_run, pairs, qwen_folders,
                                                        tmp_path):
    run = shutil.copytree(source_run, tmp_path / "run")
    (run / "alignment.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CorruptFileError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _align(run, pairs, qwen_folders, tmp_path / "q")
    assert not (tmp_path / "q" / "alignment.safetensors").exists()


def test_align_rejects_an_unknown_init(source_run, pairs, qwen_folders, tmp_path):
    with pytest.raises(ConfigError, match="init must be one of"):
        _align(source_run, pairs, qwen_folders, tmp_path / "q", init="random")
