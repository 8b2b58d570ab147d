"""What a finished default-model folder holds: weights, and metadata written last."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

META_NAME = "pe_default.json"
MODEL_WEIGHTS_NAME = "model.safetensors"


def is_built(folder: Path) -> bool:
    """A folder holds a finished default model (the metadata file is written last)."""
    return (folder / META_NAME).is_file() and (folder / MODEL_WEIGHTS_NAME).is_file()


def folder_meta(folder: Path) -> dict[str, Any] | None:
    """The ``pe_default.json`` of a finished default-model folder, or None."""
    if not is_built(folder):
        return None
    return json.loads((folder / META_NAME).read_text(encoding="utf-8"))
