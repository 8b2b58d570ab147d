"""The local registry: push, versions, list, get, remove, and its refusals."""

from __future__ import annotations

import json

import pytest
from registry_testing import snapshot, write_alignment, write_prompting_model, write_run

import pe_registry
from pe_core.errors import (
    CorruptFileError,
    DimensionMismatchError,
    MissingFileError,
    RegistryError,
)
from pe_core.integrations.st_files import ST_FILES
from pe_core.model.config import EmbedderConfig
from pe_registry.local import LocalRegistry, default_root
from pe_registry.manifest import MANIFEST_NAME, Manifest


def test_default_root_env_and_platformdirs(monkeypatch, tmp_path):
    monkeypatch.setenv("PE_REGISTRY", str(tmp_path / "x"))
    assert default_root() == tmp_path / "x"
    monkeypatch.delenv("PE_REGISTRY")
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "registry"
    monkeypatch.delenv("PE_CACHE")
    root = default_root()
    assert root.parts[-2:] == ("pe", "registry")


def test_push_list_get_remove(tmp_path, registry):
    src = write_alignment(
        tmp_path / "runs" / "llama",
        eval_results={"sts": {"spearman": 0.5}, "ret": {"main_score": 0.7, "ndcg": 0.1}},
    )
    entry = pe_registry.push(src)
    assert entry.ref == "llama@1" and entry.kind == "alignment"
    assert sorted(p.name for p in entry.path.iterdir()) == sorted([
        "README.md",
        "alignment.safetensors",
        "pe_config.json",
        MANIFEST_NAME,
        *ST_FILES,
    ])
    (row,) = pe_registry.list_artifacts()
    assert row["ref"] == "llama@1"
    assert (row["backbone"], row["model_id"], row["d_P"], row["d_B"], row["K"]) == (
        "llama",
        "org/tiny",
        8,
        16,
        5,
    )
    assert row["score"] == pytest.approx(0.6)  # mean of main_score 0.7 and spearman 0.5
    assert row["created"].endswith("Z")
    assert pe_registry.resolve("llama") == entry.path == pe_registry.pull("llama@1")
    assert pe_registry.remove("llama@1") == ["llama@1"]
    assert pe_registry.list_artifacts() == []
    assert pe_registry.resolve("llama") is None
    assert not any(registry.staging_dir.iterdir())


def test_versions_are_immutable_and_push_is_idempotent(tmp_path, registry):
    a = write_alignment(tmp_path / "a", seed=1)
    b = write_alignment(tmp_path / "b", seed=2)
    assert registry.push(a, "m").ref == "m@1"
    assert registry.push(a, "m").ref == "m@1"  # same content: same version
    assert registry.push(b, "m").ref == "m@2"
    assert registry.push(a, "m", "stable").ref == "m@stable"
    assert registry.push(a, "m", "stable").ref == "m@stable"
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match="already exists"):
        registry.push(b, "m", "stable")
    assert snapshot(registry.root) == before
    assert registry.versions("m") == ["1", "2", "stable"]
    assert registry.get("m").ref == "m@stable"  # latest = newest push
    assert [r for r in pe_registry.remove("m")] == ["m@1", "m@2", "m@stable"]
    assert not (registry.artifacts_dir / "m").exists()


def test_run_with_prompting_publishes_both_and_links_them(tmp_path, registry):
    run = write_run(tmp_path / "runs" / "llama")
    entry = registry.push(run)
    assert entry.ref == "llama@1"
    assert entry.prompting is not None and entry.prompting.ref == "llama-prompting@1"
    cfg = EmbedderConfig.load(entry.path)
    assert (cfg.prompting_id, cfg.prompting_revision) == ("llama-prompting", "1")
    p_files = sorted(p.name for p in entry.prompting.path.iterdir())
    assert "pytorch_model.bin" not in p_files  # pickles are never published
    assert {
        "config.json",
        "model.safetensors",
        "pe_prompting.json",
        "README.md",
        MANIFEST_NAME,
    } <= set(p_files)
    info = json.loads((entry.prompting.path / "pe_prompting.json").read_text())
    assert info["base_model"] == "org/p" and info["d_P"] == 8
    # checkpoints/ and log.jsonl stay out of the artifact
    assert not (entry.path / "checkpoints").exists() and not (entry.path / "log.jsonl").exists()
    # the Prompting LLM resolves like any registry name
    assert pe_registry.resolve("llama-prompting@1") == entry.prompting.path
    # and cannot be removed while the alignment uses it
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match="uses llama-prompting"):
        registry.remove("llama-prompting")
    assert snapshot(registry.root) == before
    assert registry.remove("llama-prompting", force=True) == ["llama-prompting@1"]


def test_wrong_dims_are_refused_and_registry_unchanged(tmp_path, registry):
    registry.push(write_alignment(tmp_path / "ok"), "ok")
    before = snapshot(registry.root)
    bad = write_alignment(tmp_path / "bad", d_P=8, d_B=16, config_dims=(8, 32))
    with pytest.raises(DimensionMismatchError, match="8 x 32"):
        registry.push(bad, "bad")
    with pytest.raises(DimensionMismatchError):
        pe_registry.push(bad, "ok")
    # a prompting model whose width is not d_P
    run = write_alignment(tmp_path / "run")
    write_prompting_model(run / "prompting", hidden=12)
    with pytest.raises(DimensionMismatchError, match="width 12"):
        registry.push(run, "ok")
    assert snapshot(registry.root) == before
    assert not any(registry.staging_dir.iterdir())


def test_broken_source_folders_are_refused(tmp_path, registry):
    with pytest.raises(MissingFileError):
        registry.push(tmp_path)  # empty: not an artifact
    src = write_alignment(tmp_path / "trunc")
    weights = src / "alignment.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CorruptFileError):
        registry.push(src)
    with pytest.raises(RegistryError, match="not a valid registry name"):
        registry.push(write_alignment(tmp_path / "x"), "has space")
    assert snapshot(registry.root) == {}


def test_tampered_entry_fails_every_read(tmp_path, registry):
    entry = registry.push(write_alignment(tmp_path / "llama"))
    weights = entry.path / "alignment.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="sha256"):
        pe_registry.resolve("llama")
    with pytest.raises(CorruptFileError):
        pe_registry.pull("llama@1")
    # list only hashes what it reads (the config), so it still lists the entry
    assert pe_registry.list_artifacts()[0]["ref"] == "llama@1"
    (entry.path / "pe_config.json").write_text((entry.path / "pe_config.json").read_text() + " ")
    (row,) = pe_registry.list_artifacts()
    assert "error" in row and "sha256" in row["error"]


def test_extra_and_missing_files_are_corruption(tmp_path, registry):
    entry = registry.push(write_alignment(tmp_path / "llama"))
    (entry.path / "extra.txt").write_text("x")
    with pytest.raises(CorruptFileError, match="does not list"):
        registry.get("llama")
    (entry.path / "extra.txt").unlink()
    (entry.path / "README.md").unlink()
    with pytest.raises(MissingFileError):
        registry.get("llama")


def test_manifest_refuses_unsafe_paths(tmp_path):
    for bad in ("../x", "/etc/passwd", "a/../../b", MANIFEST_NAME):
        data = {
            "format": "pe-manifest/1",
            "kind": "alignment",
            "files": {bad: {"sha256": "0", "size": 1}},
        }
        with pytest.raises(CorruptFileError):
            Manifest.from_dict(data)


def test_find_prefers_best_score_then_newest(tmp_path, registry):
    registry.push(write_alignment(tmp_path / "a", seed=1, eval_results={"t": {"m": 0.3}}), "a")
    registry.push(write_alignment(tmp_path / "b", seed=2, eval_results={"t": {"m": 0.9}}), "b")
    registry.push(write_alignment(tmp_path / "c", seed=3, model_id="org/other"), "c")
    assert pe_registry.find("org/p", "org/tiny", hub=False) == registry.get("b").path
    assert pe_registry.find("org/p", "org/other", hub=False) == registry.get("c").path
    assert pe_registry.find("org/zzz", "org/tiny", hub=False) is None


def test_pull_to_copies_out(tmp_path, registry):
    registry.push(write_alignment(tmp_path / "llama"))
    out = pe_registry.pull("llama", tmp_path / "out" / "copy")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in registry.get("llama").path.iterdir()
    )
    with pytest.raises(RegistryError, match="already exists"):
        pe_registry.pull("llama", out)


def test_kinds_do_not_share_a_name(tmp_path, registry):
    registry.push(write_alignment(tmp_path / "a"), "shared")
    p = write_prompting_model(tmp_path / "p")
    (p / "pe_prompting.json").write_text(json.dumps({"d_P": 8}))
    with pytest.raises(RegistryError, match="already names an artifact of kind 'alignment'"):
        registry.push(p, "shared")
    assert registry.push(p, "p").kind == "prompting"


def test_unknown_refs(registry):
    assert pe_registry.resolve("nothing-here") is None
    assert pe_registry.resolve("./some/path") is None
    with pytest.raises(RegistryError):
        pe_registry.pull("nothing-here")
    with pytest.raises(RegistryError):
        pe_registry.remove("nothing-here@3")
    assert isinstance(registry, LocalRegistry)
