"""The embedded default model family, built on this machine from local text.

One Prompting LLM (``"prompting"``, Llama architecture) and one small backbone per family
(``"llama"``, ``"mistral"``, ``"qwen"``, ``"gemma"``), each with its own byte-level BPE
tokenizer. Nothing is downloaded: the first call builds and caches them
(``python -m pe_core.defaults.build`` builds them all ahead of time).

Names are loaded on first use so importing this package stays cheap.

Example::

    from pe_core.defaults import ensure_default
    path = ensure_default("mistral")   # <cache>/defaults/v1/mistral/
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ensure_default": "pe_core.defaults.build",
    "defaults_root": "pe_core.defaults.build",
    "is_built": "pe_core.defaults.build",
    "read_meta": "pe_core.defaults.build",
    "build_model": "pe_core.defaults.build",
    "DEFAULT_NAMES": "pe_core.defaults.recipes",
    "RECIPE_VERSION": "pe_core.defaults.recipes",
    "ModelRecipe": "pe_core.defaults.recipes",
    "recipe": "pe_core.defaults.recipes",
    "default_table": "pe_core.defaults.table",
    "format_table": "pe_core.defaults.table",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pe_core.defaults' has no attribute {name!r}")
