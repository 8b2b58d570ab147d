"""An exported ONNX folder is checked against the hashes the export wrote: flipped bits,
a truncated or deleted data file, an edited instruction, ``onnx.files`` pointing outside
the folder, or a folder with no manifest are typed errors at load (``OnnxEmbedder``, and
``pe serve --onnx`` through it), never a silently different graph."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

INSTRUCTION = "Retrieve a passage that answers the question"


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import tiny_embedder
    from pe_registry.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "export"
    return export_onnx(tiny_embedder(get_backbone("llama")), INSTRUCTION, out, verify=False)


@pytest.fixture
def copy(export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export, tmp_path / "export"))


def edit_config(folder: Path, change: Any) -> None:
    path = folder / "pe_config.json"
    data = json.loads(path.read_text())
    change(data["onnx"])
    path.write_text(json.dumps(data))


def flip_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_the_export_loads(copy: Path) -> None:
    from pe_registry import OnnxEmbedder

    assert (copy / "pe_manifest.json").is_file()
    assert OnnxEmbedder(copy).encode(["a b"]).shape[0] == 1


def data_file(folder: Path) -> Path:
    found = sorted(folder.glob("*.onnx.data"))
    return found[0] if found else folder / "model.onnx"


@pytest.mark.parametrize(("damage", "error", "match"), [
    (lambda f: flip_bit(data_file(f)), "CorruptFileError", "does not match the sha256"),
    (lambda f: data_file(f).write_bytes(data_file(f).read_bytes()[:-100]),
     "CorruptFileError", "does not match"),
    (lambda f: data_file(f).unlink(), "MissingFileError", "is missing"),
    (lambda f: edit_config(f, lambda o: o.update(instruction="Classify the sentiment")),
     "CorruptFileError", "pe_config.json does not match"),
    (lambda f: (f / "pe_manifest.json").unlink(), "MissingFileError", "export it again"),
    (lambda f: (f / "extra.onnx").write_bytes(b"x"), "CorruptFileError", "does not list"),
    (lambda f: (f / "tokenizer.json").write_text("{}"), "CorruptFileError", "tokenizer.json"),
], ids=["flipped-bit", "truncated-data", "deleted-data", "edited-instruction",
        "no-manifest", "extra-file", "edited-tokenizer"])
def test_damaged_export_is_refused(copy: Path, damage: Any, error: str, match: str) -> None:
    from pe_core import errors
    from pe_registry import OnnxEmbedder

    damage(copy)
    with pytest.raises(getattr(errors, error), match=match):
        OnnxEmbedder(copy)


def test_graph_outside_the_folder_is_refused(copy: Path, tmp_path: Path) -> None:
    """``onnx.files`` naming ``../base/model.onnx``, even in a re-sealed folder."""
    from pe_core.errors import CorruptFileError
    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_folder import seal_export

    shutil.copytree(copy, tmp_path / "base")
    edit_config(copy, lambda o: o["files"].update(fp32="../base/model.onnx"))
    (copy / "pe_manifest.json").unlink()
    seal_export(copy)
    with pytest.raises(CorruptFileError, match="unsafe"):
        OnnxEmbedder(copy)


def test_serve_loader_reports_the_damage(copy: Path) -> None:
    from pe_core.errors import CorruptFileError
    from pe_core.serving.backends import load_onnx

    flip_bit(data_file(copy))
    with pytest.raises(CorruptFileError):
        load_onnx("pe", copy)
