"""The default model family, in tiny mode (same code path as the real build, seconds)."""

from __future__ import annotations

import json
import math
import threading

import pytest

from pe_core.defaults import (
    DEFAULT_NAMES,
    RECIPE_VERSION,
    default_table,
    defaults_root,
    ensure_default,
    format_table,
    read_meta,
    recipe,
)
from pe_core.defaults import build as build_mod
from pe_core.defaults import cli as cli_mod
from pe_core.errors import ConfigError

FAMILIES = {
    "prompting": "LlamaForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen": "Qwen2ForCausalLM",
    "gemma": "GemmaForCausalLM",
}


@pytest.fixture(scope="module", autouse=True)
def pe_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("pe-cache")
        mp.setenv("PE_CACHE", str(path))
        mp.setenv("PE_DEFAULTS_TINY", "1")
        yield path


@pytest.fixture(scope="module")
def folders(pe_cache):
    return {name: ensure_default(name) for name in DEFAULT_NAMES}


def test_folders_are_complete_hf_models(folders):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name, folder in folders.items():
        assert folder == defaults_root(True) / name
        assert folder.parent.name == f"{RECIPE_VERSION}-tiny"
        files = {p.name for p in folder.iterdir()}
        assert {"config.json", "model.safetensors", "pe_default.json", "tokenizer.json"} <= files
        assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        assert type(model).__name__ == FAMILIES[name]
        assert model.config.vocab_size == len(tok)
        assert tok.pad_token_id is not None and tok.eos_token_id is not None
        assert tok.bos_token_id is not None
        ids = tok("hello world")["input_ids"]
        assert (ids[0] == tok.bos_token_id) == (name != "qwen")
        assert tok.decode(ids, skip_special_tokens=True) == "hello world"
        batch = tok(["a", "a longer text"], padding=True, return_tensors="pt")
        assert set(batch) == {"input_ids", "attention_mask"}
        assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_widths_and_vocabularies_differ(folders):
    from transformers import AutoTokenizer

    metas = {n: read_meta(n) for n in DEFAULT_NAMES}
    assert len({m["hidden_size"] for m in metas.values()}) == len(DEFAULT_NAMES)
    assert len({m["vocab_size"] for m in metas.values()}) == len(DEFAULT_NAMES)
    a = AutoTokenizer.from_pretrained(folders["llama"]).get_vocab()
    b = AutoTokenizer.from_pretrained(folders["gemma"]).get_vocab()
    shared = set(a) & set(b)
    assert len(shared) > 256  # every byte symbol at least
    assert any(a[t] != b[t] for t in shared)  # special tokens sit elsewhere: ids differ


def test_metadata_records_training(folders):
    for name in DEFAULT_NAMES:
        meta = read_meta(name)
        r = recipe(name, tiny=True)
        assert meta["seed"] == r.seed and meta["steps"] == r.steps and meta["tiny"]
        assert meta["parameters"] > 0
        assert meta["size_bytes"] == (folders[name] / "model.safetensors").stat().st_size
        for key in ("train_perplexity", "dev_perplexity", "dev_bits_per_byte"):
            assert math.isfinite(meta[key]) and meta[key] > 0
        assert meta["dev_perplexity"] < meta["vocab_size"]  # learned something
        assert meta["final_loss"] < meta["first_loss"]
        assert len(meta["corpus_fingerprint"]) == 64


def test_second_call_does_not_rebuild(folders, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(build_mod, "build_model", boom)
    assert ensure_default("qwen") == folders["qwen"]


def test_build_is_reproducible(folders, tmp_path):
    from safetensors.numpy import load_file

    build_mod.build_model(recipe("gemma", tiny=True), tmp_path / "again")
    first = load_file(folders["gemma"] / "model.safetensors")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert first.keys() == again.keys()
    assert all((first[k] == again[k]).all() for k in first)
    assert (tmp_path / "again" / "tokenizer.json").read_text() == (
        folders["gemma"] / "tokenizer.json"
    ).read_text()


def test_concurrent_callers_build_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PE_CACHE", str(tmp_path))  # nothing built here yet
    calls = []
    real = build_mod.build_model

    def counting(r, out):
        calls.append(r.name)
        return real(r, out)

    monkeypatch.setattr(build_mod, "build_model", counting)
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_default("mistral"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [tmp_path / "defaults" / f"{RECIPE_VERSION}-tiny" / "mistral"] * 2
    assert calls == ["mistral"]  # the caller that waited found the fresh build
    assert read_meta("mistral") is not None


def test_failed_build_leaves_nothing(pe_cache, monkeypatch):
    def crash(r, out):
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(build_mod, "build_model", crash)
    with pytest.raises(RuntimeError):
        ensure_default("gemma", tiny=False, rebuild=True)  # the full-size slot: nothing built
    root = defaults_root(False)
    assert not (root / "gemma").exists()
    assert not list(root.glob(".gemma.tmp-*"))


def test_unknown_name():
    with pytest.raises(ConfigError, match="prompting"):
        ensure_default("bert")


def test_table_and_cli(folders, capsys):
    rows = default_table()
    assert [r["name"] for r in rows] == list(DEFAULT_NAMES)
    md = format_table(rows)
    assert md.count("\n") == len(rows) + 1 and "GemmaConfig" in md
    assert cli_mod.main(["--tiny", "qwen"]) == 0
    out = capsys.readouterr().out
    assert "Qwen2Config" in out and "prompting" not in out
    meta = json.loads((folders["qwen"] / "pe_default.json").read_text())
    assert meta["name"] == "qwen"


def test_defaults_modules_import_one_way():
    """No module of pe_core.defaults imports (even inside a function) one that imports it
    back: building, the lookup policy and the CLI sit in a chain."""
    import ast
    import pathlib

    import pe_core.defaults

    root = pathlib.Path(pe_core.defaults.__file__).parent
    names = {p.stem for p in root.glob("*.py")} - {"__init__", "__main__"}
    graph = {}
    for name in names:
        tree = ast.parse((root / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("pe_core.defaults."):
                    found.add(node.module.rsplit(".", 1)[1])
                elif node.module == "pe_core.defaults":
                    found |= {a.name for a in node.names if a.name in names}
        graph[name] = found & names
    order = ["tokenizer", "pretrain", "recipes", "folder", "build", "shipped", "lookup",
             "table", "cli"]
    assert set(order) == names
    for name, imported in graph.items():
        later = {m for m in imported if order.index(m) >= order.index(name)}
        assert not later, f"{name} imports {sorted(later)}, which come after it"
