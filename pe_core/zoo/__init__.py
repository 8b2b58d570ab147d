"""Trained embedders that ship inside pe_core (the zoo), found by (Prompting LLM, model).

Each entry is a folder ``pe_core/zoo/<name>/``: what ``pe train`` saved (the alignment, its
``pe_config.json``, the trained Prompting LLM in ``prompting/``, the sentence-transformers
files), a ``README.md`` model card, and a ``pe_manifest.json`` of every file's sha256, which
is checked before the entry is used. Only the frozen backbone is not in it: a ``pe-real:``
checkpoint package names it. ``pe_core.load`` finds an entry through the ``zoo`` resolver,
so a fresh install loads the trained model with no build step and no network.
``PE_ZOO`` points at another zoo folder (tests; a zoo of one's own). Needs no torch.

Example::

    >>> from pe_core import zoo
    >>> zoo.find("pe-default:prompting@v2", "pe-real:gemma3-270m")  # doctest: +SKIP
    PosixPath('.../pe_core/zoo/gemma3-270m')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pe_core.errors import MissingFileError
from pe_core.model.config import CONFIG_NAME
from pe_core.safe_io import MANIFEST_NAME, check_manifest_beside

PREFIX = "pe-zoo:"  # an entry by name: pe_core.load("pe-zoo:gemma3-270m")


def root() -> Path:
    override = os.environ.get("PE_ZOO")
    return Path(override).expanduser() if override else Path(__file__).parent


def names() -> list[str]:
    """The entries: folders of the zoo that hold a ``pe_config.json`` (not the hidden
    ones ``python -m pe_core.zoo add`` assembles an entry in)."""
    base = root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir()
                  if not p.name.startswith(".") and (p / CONFIG_NAME).is_file())


def entry(name: str) -> Path:
    """The folder of entry ``name``; :class:`MissingFileError` when it has no manifest (a
    shipped entry always has one, so its files can be checked)."""
    folder = root() / name
    if not (folder / MANIFEST_NAME).is_file():
        raise MissingFileError(
            f"{folder / MANIFEST_NAME} is missing: the zoo entry {name!r} cannot be checked; "
            "reinstall pe-core (or rebuild the entry: python -m pe_core.zoo add RUN NAME)"
        )
    return folder


def find(prompting_id: str, model_id: str) -> Path | None:
    """The entry trained for this (Prompting LLM, backbone model) pair, or None.

    Ids are compared as ``pe_config.json`` records them (see
    :func:`pe_core.model_refs.ref_id`): an entry trained from ``pe-default:prompting``
    answers for that Prompting LLM, since it carries the Prompting LLM trained from it."""
    for name in names():
        cfg = _ids(root() / name)
        if cfg == (prompting_id, model_id):
            return entry(name)
    return None


def resolve(ref: str) -> Path | None:
    """``pe-zoo:NAME`` -> the entry's folder; None for any other reference."""
    if not ref.startswith(PREFIX):
        return None
    name = ref[len(PREFIX):]
    if name not in names():
        raise MissingFileError(f"no zoo entry {name!r}; the zoo holds {names() or 'nothing'}")
    return entry(name)


def ids(name: str) -> tuple[str | None, str | None]:
    """(Prompting LLM id, backbone model id) entry ``name`` was trained for."""
    return _ids(root() / name)


def load(name: str, **kwargs: Any) -> Any:
    """Entry ``name`` loaded as a user loads it: ``pe_core.load(backbone=, model=,
    prompting=)`` for the pair it was trained for, which the zoo resolver answers with
    this entry (no flag, no untrained warning). ``kwargs`` go to ``pe_core.load``."""
    import pe_core

    cfg = json.loads((entry(name) / CONFIG_NAME).read_text(encoding="utf-8"))
    return pe_core.load(backbone=cfg["backbone"], model=cfg["model_id"],
                        prompting=cfg["prompting_id"], **kwargs)


def _ids(folder: Path) -> tuple[str | None, str | None]:
    try:
        cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        return cfg.get("prompting_id"), cfg.get("model_id")
    except (OSError, ValueError, AttributeError):
        check_manifest_beside(folder)  # a damaged file says so (CorruptFileError)
        return None, None
