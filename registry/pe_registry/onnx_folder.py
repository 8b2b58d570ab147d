"""An exported ONNX folder is sealed like a registry artifact: the export writes a
``pe_manifest.json`` (sha256 and size of every file), and every load checks it first.

Without it nothing would notice flipped bits in ``model.onnx.data``, a truncated or
deleted data file (onnxruntime's own error says only ``Fail``), or an edited
``onnx.instruction`` in ``pe_config.json``, which would label a graph with an
instruction it was not exported with. ``onnx.files`` must also name files inside the
folder, since the manifest can only vouch for those.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, MissingFileError
from pe_core.model.config import CONFIG_NAME
from pe_core.safe_io import MANIFEST_NAME
from pe_registry.manifest import Manifest, build_manifest, safe_relpath, verify

EXPORT_KIND = "onnx-export"


def seal_export(folder: str | Path) -> Manifest:
    """Write the manifest of a finished export folder (its last file).

    Example::

        seal_export(stage)   # after the graphs, the tokenizer and pe_config.json
    """
    manifest = build_manifest(folder, EXPORT_KIND)
    manifest.save(folder)
    return manifest


def check_export(folder: str | Path) -> Manifest:
    """Every file of an export folder as the export wrote it.

    Raises :class:`MissingFileError` (no manifest, or a listed file gone) or
    :class:`~pe_core.errors.CorruptFileError` (a file changed, truncated or added).
    """
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        raise MissingFileError(
            f"{folder} has no {MANIFEST_NAME}: it was not written by `pe export onnx` of "
            "this pe (older exports carry no hashes) or the file was removed; export it again"
        )
    manifest = verify(folder)
    if manifest.kind != EXPORT_KIND:
        raise ConfigError(
            f"{folder} is a registry artifact of kind {manifest.kind!r}, not an exported "
            "ONNX folder (export one with `pe export onnx`)"
        )
    return manifest


def graph_path(folder: Path, files: Any, precision: str) -> Path:
    """The graph file ``onnx.files[precision]`` names, which must be a plain path inside
    ``folder`` (``../base/model.onnx`` would load a graph no manifest checked)."""
    rel = files.get(precision) if isinstance(files, dict) else None
    if not isinstance(rel, str):
        raise ConfigError(f"{folder / CONFIG_NAME}: onnx.files.{precision} must name a file")
    safe_relpath(rel, f"{folder / CONFIG_NAME} onnx.files")
    return folder / rel
