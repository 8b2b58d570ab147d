"""Deployment backends (e.g. ONNX) that plugins add through ``pe_register_exporters``.

An exporter turns a loaded embedder plus one instruction into a folder, and loads such a
folder back as an object with the same ``encode`` signature as the torch embedder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_core.errors import MissingExtraError, PluginSpecError

ExportFn = Callable[..., Path]
LoadFn = Callable[..., Any]


@dataclass(frozen=True)
class Exporter:
    name: str
    export: ExportFn  # export(embedder, instruction, out_dir, **options) -> folder
    load: LoadFn  # load(folder, **options) -> encoder with .encode(texts, ...)


class ExporterRegistry:
    """Name -> :class:`Exporter`."""

    def __init__(self) -> None:
        self._exporters: dict[str, Exporter] = {}

    def register(self, name: str, export: ExportFn, load: LoadFn) -> None:
        """Add an exporter. Example: ``registry.register("onnx", export_onnx, OnnxEmbedder)``."""
        if name in self._exporters:
            raise PluginSpecError(
                f"exporter {name!r} is registered twice: uninstall one of the plugins that "
                "register it (pe plugins lists them)"
            )
        self._exporters[name] = Exporter(name, export, load)

    def get(self, name: str) -> Exporter:
        try:
            return self._exporters[name]
        except KeyError:
            have = ", ".join(sorted(self._exporters)) or "none"
            raise MissingExtraError(
                f"no exporter {name!r} is installed (installed: {have}); "
                "pip install 'pe-registry[onnx]' for ONNX"
            ) from None

    def __iter__(self) -> Iterator[Exporter]:
        return iter(self._exporters.values())
