"""The embedded default model family, built on this machine from local text.

One Prompting LLM (``"prompting"``, Llama architecture) and one small backbone per family
(``"llama"``, ``"mistral"``, ``"qwen"``, ``"gemma"``), each with its own byte-level BPE
tokenizer. Nothing is downloaded: the built weights ship inside the package
(:mod:`pe_core.defaults.shipped`); ``python -m pe_core.defaults --force`` rebuilds them on
this machine, and a model of another recipe is built on first use.

Modules, each importing only those above it: ``recipes`` (what to build), ``folder``
(what a finished folder holds), ``build`` (building one), ``shipped`` (the packaged
copies), ``lookup`` (which folder a caller gets), ``table`` and ``cli``.

Names are loaded on first use so importing this package stays cheap.

Example::

    from pe_core.defaults import ensure_default
    path = ensure_default("mistral")   # <package>/defaults/shipped/v2/mistral/
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ensure_default": "pe_core.defaults.lookup",
    "existing_default": "pe_core.defaults.lookup",
    "defaults_root": "pe_core.defaults.lookup",
    "read_meta": "pe_core.defaults.lookup",
    "is_built": "pe_core.defaults.folder",
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
