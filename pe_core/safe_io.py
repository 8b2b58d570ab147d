"""Safetensors reading and writing with typed errors; nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pe_core.errors import CorruptFileError, MissingFileError, NonFiniteWeightsError


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
    """Tensors and header metadata of a safetensors file of weights, with typed errors:
    every tensor must be floating point and finite (:func:`check_weights`)."""
    from safetensors.torch import load_file

    metadata = check_safetensors(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise CorruptFileError(f"{path} could not be read ({exc}); save it again") from exc
    check_weights(tensors.items(), path)
    return tensors, metadata


def check_weights(named: Iterable[tuple[str, Any]], source: str | Path) -> None:
    """Refuse weights that would embed silently wrong: a tensor that is not floating point
    (an int32 copy of a weight casts to a few integers, a zero alignment in effect) or
    one holding NaN or inf (every vector it touches becomes NaN).

    Raises :class:`CorruptFileError` / :class:`NonFiniteWeightsError`.

    Example::

        check_weights(model.named_parameters(), "runs/x/prompting")
    """
    import torch

    for name, tensor in named:
        if not tensor.is_floating_point():
            raise CorruptFileError(
                f"{source}: weight {name!r} is {tensor.dtype}, not floating point; the file "
                "was written wrongly: save the weights again from the trained model"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise NonFiniteWeightsError(
                f"{source}: weight {name!r} holds NaN or inf values, so every embedding "
                "would be NaN; the run diverged or the file is damaged: use an earlier "
                "checkpoint or train again"
            )


def save_tensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write atomically (see :func:`atomic_path`)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata)
    return Path(path)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path in ``path``'s folder to write to; renamed over ``path`` when the block
    ends, removed if it fails, so a reader never sees a half-written file.

    Example::

        with atomic_path("out.npy") as tmp:
            np.save(tmp, vectors)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # an ordinary file, not mkstemp's private one
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

MANIFEST_NAME = "pe_manifest.json"  # sha256 and size of every file of an artifact
MANIFEST_FORMAT = "pe-manifest/1"  # its "format" field


def list_files(folder: str | Path) -> list[str]:
    """Relative POSIX paths of the files under ``folder``, sorted, its manifest excluded."""
    root = Path(folder)
    return [path.relative_to(root).as_posix() for path in sorted(root.rglob("*"))
            if path.is_file() and path.relative_to(root).as_posix() != MANIFEST_NAME]


def hash_files(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``{relpath: {"sha256", "size"}}`` for every file under ``folder`` (the manifest's
    ``files``; :func:`verify_listed_files` checks it back)."""
    root = Path(folder)
    return {rel: {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
            for rel in list_files(root)}


def verify_listed_files(root: Path, files: dict[str, Any], where: str) -> None:
    """Each ``{relpath: {"sha256", "size"}}`` entry present under ``root`` with that size
    and hash; :class:`MissingFileError` / :class:`CorruptFileError` otherwise."""
    for rel, entry in files.items():
        path = root / rel
        if not path.is_file():
            raise MissingFileError(
                f"{path} is missing: the artifact is incomplete; pull or push it again"
            )
        # size first: cheap, and catches truncation without reading the file
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise CorruptFileError(
                f"{path} does not match the sha256 in {where}: the file was changed "
                "or damaged after it was published; remove the artifact and pull it again"
            )


def check_manifest_beside(folder: str | Path) -> None:
    """A folder loaded as it is gets the check a registry entry gets: when a
    ``pe_manifest.json`` sits in it, every file it lists must match its hash.

    Example::

        check_manifest_beside("pulled/pe-align-llama")  # CorruptFileError if damaged
    """
    root = Path(folder)
    path = root / MANIFEST_NAME
    if not path.is_file():
        return
    try:
        files = json.loads(path.read_bytes())["files"]
        listed = {str(rel): {"sha256": str(e["sha256"]), "size": int(e["size"])}
                  for rel, e in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(
            f"{path} is not a readable manifest ({exc!r}): pull or push the artifact again"
        ) from None
    if any(Path(rel).is_absolute() or ".." in Path(rel).parts for rel in listed):
        raise CorruptFileError(f"{path} lists a path outside {root}: do not trust it")
    verify_listed_files(root, listed, MANIFEST_NAME)
