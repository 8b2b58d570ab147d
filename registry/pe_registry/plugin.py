"""The pe-core plugin: registry names and Hub repos as alignment references, the local
registry as a publisher, ONNX as an exporter, and the ``pe push | pull | list | remove``
and ``pe export onnx`` commands.

Loaded through the ``pe_core`` entry point; pe-core never imports this package. Imports
stay inside the hooks so ``pe --help`` does not pay for ``huggingface_hub``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pe_core.plugins.hookspecs import hookimpl

# the local registry first (no network), then the Hub
LOCAL_PRIORITY = 10
HUB_PRIORITY = 20


def resolve_local(ref: str) -> Path | None:
    """``name`` / ``name@version`` -> the hash-checked registry folder, or None."""
    from pe_registry import api

    return api.resolve(ref, hub=False)


def find_local(prompting_id: str, model_id: str) -> Path | None:
    """Best alignment for the pair among registry entries (including pulled Hub ones)."""
    from pe_registry import api

    return api.find(prompting_id, model_id, hub=False)


def resolve_hub(ref: str) -> Path | None:
    """``org/name[@revision]`` that is a pe artifact -> its pulled, hash-checked folder."""
    from pe_registry import api

    return api.resolve(ref, local=False)


def find_hub(prompting_id: str, model_id: str) -> Path | None:
    """Newest alignment on the Hub tagged for the pair, pulled into the registry."""
    from pe_registry import api

    return api.find(prompting_id, model_id, local=False)


def publish_local(folder: Path, name: str) -> Any:
    """Push a run or artifact folder into the local registry under ``name``."""
    from pe_registry import api

    return api.push(folder, name)


def export_onnx(embedder: Any, instruction: str | None, out_dir: Any, **options: Any) -> Path:
    from pe_registry.onnx_export import export_onnx as _export

    return _export(embedder, instruction, out_dir, **options)


def load_onnx(folder: Any, **options: Any) -> Any:
    from pe_registry.onnx_embedder import OnnxEmbedder

    return OnnxEmbedder(folder, **options)


@hookimpl
def pe_register_resolvers(registry: Any) -> None:
    registry.register("registry", resolve_local, find_local, priority=LOCAL_PRIORITY)
    registry.register("hub", resolve_hub, find_hub, priority=HUB_PRIORITY)


@hookimpl
def pe_register_publishers(registry: Any) -> None:
    registry.register("registry", publish_local)


@hookimpl
def pe_register_exporters(registry: Any) -> None:
    registry.register("onnx", export_onnx, load_onnx)


@hookimpl
def pe_register_commands(cli: Any) -> None:
    from pe_registry.cli import register

    register(cli)
    __import__("pe_registry.onnx_cli", fromlist=["register"]).register(cli)  # pe export onnx
