"""Atomic file-system steps: a reader sees a file or folder whole, or not at all.

Everything is first written under a temporary name in the same folder (or the same
file system) and then renamed, because ``rename`` is atomic on POSIX and Windows
(``os.replace``) while a copy is not.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file and a rename.

    Example::

        write_bytes_atomic("folder/pe_manifest.json", b"{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as stable, indented JSON (sorted keys, so equal data is equal bytes)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return write_bytes_atomic(path, text.encode())


def move_dir(src: str | Path, dst: str | Path) -> Path:
    """Rename the folder ``src`` to ``dst`` (which must not exist); both must be on the
    same file system, which is why staging folders live inside the registry."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.rename(src, dst)
    return dst


def remove_dir(path: str | Path, trash: str | Path) -> None:
    """Remove a folder so that it disappears at once: rename it into ``trash`` (same file
    system), then delete it there at leisure."""
    path = Path(path)
    if not path.exists():
        return
    Path(trash).mkdir(parents=True, exist_ok=True)
    doomed = Path(tempfile.mkdtemp(dir=trash, prefix="rm-"))
    os.rename(path, doomed / "x")
    shutil.rmtree(doomed, ignore_errors=True)
