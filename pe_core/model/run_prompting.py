"""Which Prompting LLM an alignment folder was trained with, by one rule that every
reader shares (``pe_core.load``, ``pe align --from``, ``pe push``).

A ``pe train`` run saves its trained Prompting LLM in ``prompting/``, while its
``pe_config.json`` still names the untrained model the run started from. Without
``prompting/`` the run's alignment would be read with that untrained model, and the
vectors would be wrong without a word; so a run whose ``prompting/`` is gone is refused.
Any other alignment folder (``pe align`` output, a pushed or pulled artifact) names its
Prompting LLM in ``pe_config.json``. Needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from pe_core.errors import MissingFileError
from pe_core.training.settings import SETTINGS_NAME

PROMPTING_DIR = "prompting"


def trained_prompting(folder: str | Path) -> Path | None:
    """``folder/prompting`` when it holds a model, None when ``folder`` is not a
    ``pe train`` run of the Prompting-LLM method (its config names its Prompting LLM).

    Raises :class:`MissingFileError` for such a run without its ``prompting/``.

    Example::

        trained_prompting("runs/llama")      # runs/llama/prompting
    """
    folder = Path(folder)
    own = folder / PROMPTING_DIR
    if (own / "config.json").is_file():
        return own
    method = run_method(folder)
    if method == "unreadable":
        raise MissingFileError(
            f"{folder} has no {own} and its {SETTINGS_NAME} cannot be read, so whether its "
            "alignment needs a trained Prompting LLM cannot be told: restore the file (or "
            f"{own})"
        )
    if method == "pe":
        raise MissingFileError(
            f"{folder} is a `pe train` run without {own} (the trained Prompting LLM its "
            f"alignment was trained with): restore {own} from a backup, or train again; "
            "the untrained Prompting LLM its pe_config.json names would give other vectors"
        )
    return None


def run_method(folder: Path) -> str | None:
    """The ``method`` a run folder's ``train_settings.json`` records: None without the
    file, ``"unreadable"`` when it is there but is not a settings object."""
    path = folder / SETTINGS_NAME
    if not path.is_file():
        return None
    try:
        method = json.loads(path.read_text(encoding="utf-8")).get("method")
    except (OSError, ValueError, AttributeError):
        return "unreadable"
    return method if isinstance(method, str) else "unreadable"
