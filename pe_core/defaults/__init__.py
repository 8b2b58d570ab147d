"""The embedded default model family, built on this machine from local text.

One Prompting LLM (``"prompting"``, Llama architecture) and one small backbone per family
(``"llama"``, ``"mistral"``, ``"qwen"``, ``"gemma"``), each with its own byte-level BPE
tokenizer. Nothing is downloaded: the first call builds and caches them.

Example::

    from pe_core.defaults import ensure_default
    path = ensure_default("mistral")   # <cache>/defaults/v1/mistral/
"""

from __future__ import annotations

from pe_core.defaults.build import defaults_root, ensure_default, is_built, read_meta
from pe_core.defaults.recipes import DEFAULT_NAMES, RECIPE_VERSION, ModelRecipe, recipe
from pe_core.defaults.table import default_table, format_table

__all__ = [
    "DEFAULT_NAMES",
    "RECIPE_VERSION",
    "ModelRecipe",
    "default_table",
    "defaults_root",
    "ensure_default",
    "format_table",
    "is_built",
    "read_meta",
    "recipe",
]
