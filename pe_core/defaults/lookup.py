"""Which folder a default model comes from: this machine's build, else the shipped copy,
else a build made now.

A build made on this machine wins over the shipped copy, so ``--force`` rebuilds are what
everything uses afterwards; the tiny test variants are never shipped.

Example::

    >>> from pe_core.defaults.lookup import ensure_default
    >>> ensure_default("qwen")  # doctest: +SKIP
    PosixPath('.../pe_core/defaults/shipped/v2/qwen')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pe_core.data import cache_dir
from pe_core.defaults import build
from pe_core.defaults.folder import folder_meta, is_built
from pe_core.defaults.recipes import RECIPE_VERSION, recipe
from pe_core.defaults.shipped import shipped_folder


def _tiny_from_env(tiny: bool | None) -> bool:
    if tiny is not None:
        return tiny
    return os.environ.get("PE_DEFAULTS_TINY", "").lower() in ("1", "true", "yes")


def defaults_root(tiny: bool | None = None) -> Path:
    """``<cache>/defaults/<recipe version>/`` (or ``...-tiny/``): one folder per default model
    built on this machine."""
    suffix = "-tiny" if _tiny_from_env(tiny) else ""
    return cache_dir() / "defaults" / f"{RECIPE_VERSION}{suffix}"


def existing_default(name: str, *, tiny: bool | None = None) -> Path | None:
    """The folder of default ``name`` that needs no build: this machine's, else the
    shipped one (full size only), else None.

    Example::

        >>> existing_default("llama", tiny=True) is None  # doctest: +SKIP
        True
    """
    tiny = _tiny_from_env(tiny)
    local = defaults_root(tiny) / name
    if is_built(local):
        return local
    return None if tiny else shipped_folder(name)


def ensure_default(name: str, *, tiny: bool | None = None, rebuild: bool = False) -> Path:
    """The folder of default model ``name``: :func:`existing_default`, else built now.

    ``name`` is one of ``"prompting"``, ``"llama"``, ``"mistral"``, ``"qwen"``, ``"gemma"``.
    The folder loads with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.
    ``tiny`` (default: env ``PE_DEFAULTS_TINY``) selects the seconds-to-build test variants.
    ``rebuild`` builds on this machine even when a model is cached or shipped (see
    :func:`pe_core.defaults.build.build_once` for how concurrent builds are kept safe).

    Example::

        >>> from transformers import AutoModelForCausalLM
        >>> path = ensure_default("qwen")
        >>> model = AutoModelForCausalLM.from_pretrained(path)
    """
    r = recipe(name, tiny=_tiny_from_env(tiny))
    if not rebuild:
        found = existing_default(name, tiny=r.tiny)
        if found is not None:
            return found
    return build.build_once(r, defaults_root(r.tiny), rebuild=rebuild)


def read_meta(name: str, *, tiny: bool | None = None) -> dict[str, Any] | None:
    """The ``pe_default.json`` of the default model :func:`ensure_default` would return
    without building, or None.

    Example::

        >>> read_meta("llama")["dev_perplexity"]  # doctest: +SKIP
        71.18
    """
    found = existing_default(name, tiny=tiny)
    return None if found is None else folder_meta(found)
