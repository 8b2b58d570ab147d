"""Safetensors reading and writing with typed errors; nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from pe_core.errors import CorruptFileError, MissingFileError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: str | Path) -> dict[str, str]:
    """Open ``path``'s header and check the data length; return its metadata.

    Raises :class:`MissingFileError` or :class:`CorruptFileError`.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CorruptFileError(
            f"{path} is not a readable safetensors file ({exc}); it is truncated or "
            "corrupt: download or save it again"
        ) from exc


def load_tensors(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and header metadata of a safetensors file, with typed errors."""
    from safetensors.torch import load_file

    metadata = check_safetensors(path)
    try:
        return load_file(str(path)), metadata
    except Exception as exc:
        raise CorruptFileError(f"{path} could not be read ({exc}); save it again") from exc


def save_tensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write atomically: a temp file in the same folder, then rename over ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
