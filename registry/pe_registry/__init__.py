"""pe-registry: publish, find and fetch pe alignment artifacts, locally and on the Hub.

Example::

    from pe_registry import push, pull, find
    push("runs/llama")                          # local registry: llama@1
    push("runs/llama", "my-org/pe-llama")       # Hugging Face Hub, one commit
    folder = pull("my-org/pe-llama@main")       # revision pinned, hashes checked
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = [
    "OnnxEmbedder", "find", "list_artifacts", "list_hub", "pull", "push", "remove", "resolve",
]


def __getattr__(name: str) -> Any:
    # lazy: pe-core imports pe_registry.plugin on every `pe` run, which must stay cheap
    if name == "OnnxEmbedder":  # needs the [onnx] extra: imported only when asked for
        from pe_registry.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder
    if name in __all__:
        from pe_registry import api

        return getattr(api, name)
    raise AttributeError(f"module 'pe_registry' has no attribute {name!r}")
