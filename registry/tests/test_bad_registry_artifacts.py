"""Damaged or incomplete artifacts and registries: ``pe push`` of a run without its
trained Prompting LLM, into a registry it cannot write, under an empty name; ``pe list``
of an entry without its manifest. Each is a typed error that names the right file, and
the registry is byte-identical afterwards."""

from __future__ import annotations

import json
import os

import pytest
from registry_testing import snapshot, write_alignment, write_run

import pe_registry
from pe_core.errors import MissingFileError, PEError, RegistryError


def run_without_prompting(folder):
    """A `pe train` run (train_settings.json says method "pe") whose prompting/ is gone."""
    run = write_run(folder, with_prompting=False)
    (run / "train_settings.json").write_text(json.dumps({"method": "pe", "steps": 2}))
    return run


def test_push_of_a_run_without_its_prompting_folder_is_refused(tmp_path, registry, capsys):
    from pe_core.cli.main import main

    registry.push(write_alignment(tmp_path / "other"), "other")
    before = snapshot(registry.root)
    run = run_without_prompting(tmp_path / "run")
    with pytest.raises(MissingFileError, match=f"{run / 'prompting'}"):
        pe_registry.push(run, "run")
    assert main(["push", str(run), "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompting" in err[0]
    assert snapshot(registry.root) == before
    # the same folder as `pe align` output (no train_settings method "pe") names its
    # Prompting LLM in pe_config.json and is pushed as it is
    (run / "train_settings.json").write_text(json.dumps({"method": "align"}))
    assert pe_registry.push(run, "run").ref == "run@1"


@pytest.mark.parametrize("name", ["", "  ", "\t"])
def test_push_under_an_empty_name_is_refused(tmp_path, registry, capsys, name):
    from pe_core.cli.main import main

    src = write_alignment(tmp_path / "src")
    with pytest.raises(RegistryError, match="not a valid registry name|not an artifact ref"):
        registry.push(src, name)
    with pytest.raises(RegistryError):
        pe_registry.push(src, name)
    assert main(["push", str(src), name]) == 2
    assert "src" not in capsys.readouterr().out  # not published under the folder's name
    assert registry.versions("src") == []


def test_push_into_a_registry_the_user_cannot_write(tmp_path, registry, monkeypatch):
    """The file system refusing a change is a RegistryError that names the registry and
    PE_REGISTRY; nothing is left half written (root can write anywhere, so the refusal
    is simulated where the push writes first: its staging folder)."""
    import tempfile

    registry.push(write_alignment(tmp_path / "old"), "old")
    before = snapshot(registry.root)

    def refused(*args, dir=None, **kw):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(RegistryError, match="not writable.*PE_REGISTRY") as info:
        pe_registry.push(write_run(tmp_path / "run"), "new")
    assert str(registry.root) in str(info.value)
    monkeypatch.undo()
    assert snapshot(registry.root) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_push_into_a_read_only_registry_folder(tmp_path, registry):
    registry.push(write_alignment(tmp_path / "old"), "old")
    registry.root.chmod(0o555)
    try:
        with pytest.raises(RegistryError, match="not writable"):
            pe_registry.push(write_alignment(tmp_path / "new", seed=1), "new")
    finally:
        registry.root.chmod(0o755)


def test_list_names_the_missing_manifest_not_pe_prompting_json(tmp_path, registry, capsys):
    from pe_core.cli.main import main

    entry = registry.push(write_alignment(tmp_path / "align"), "align")
    (entry.path / "pe_manifest.json").unlink()
    [row] = pe_registry.list_artifacts()
    assert "pe_manifest.json" in row["error"] and "pe_prompting.json" not in row["error"]
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "BROKEN" in out and "pe_prompting" not in out
    with pytest.raises(PEError, match="pe_manifest.json"):
        registry.get("align@1")


def _edit_weight(path, change):
    from safetensors.torch import load_file, save_file

    raw = path.read_bytes()
    meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")]).get("__metadata__")
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, meta)


@pytest.mark.parametrize(("where", "change", "error", "match"), [
    ("alignment.safetensors", lambda t: t["weight"].__setitem__((0, 0), float("nan")),
     "NonFiniteWeightsError", "NaN or inf"),
    ("alignment.safetensors", lambda t: t.update(weight=t["weight"].to(__import__("torch").int32)),
     "CorruptFileError", "not floating point"),
    ("prompting/model.safetensors",
     lambda t: t["embed_tokens.weight"].__setitem__((1, 1), float("inf")),
     "NonFiniteWeightsError", "embed_tokens"),
], ids=["alignment-nan", "alignment-int32", "prompting-inf"])
def test_push_of_weights_that_would_embed_wrong_is_refused(tmp_path, registry, where, change,
                                                           error, match):
    """What pe_core.load refuses is refused before it is published (read from the raw
    bytes, no torch), and nothing is written."""
    from pe_core import errors

    registry.push(write_alignment(tmp_path / "other"), "other")
    before = snapshot(registry.root)
    run = write_run(tmp_path / "run")
    _edit_weight(run / where, change)
    with pytest.raises(getattr(errors, error), match=match):
        pe_registry.push(run, "run")
    assert snapshot(registry.root) == before
