"""``pe_manifest.json``: the sha256 and size of every file of an artifact.

The manifest travels with the artifact (locally and on the Hub), so every reader can
check what it reads. It lists every file of the artifact except itself; a file that is
missing, extra, or whose hash differs makes the artifact corrupt.

Layout::

    {"format": "pe-manifest/1", "kind": "alignment", "created": "2025-01-01T00:00:00.000000Z",
     "files": {"alignment.safetensors": {"sha256": "...", "size": 1152}, ...}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from pe_core.errors import CorruptFileError, MissingFileError
from pe_core.safe_io import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    hash_files,
    list_files,
    verify_listed_files,
)
from pe_registry.atomic import write_json_atomic

FORMAT = MANIFEST_FORMAT


@dataclass
class Manifest:
    """What an artifact holds.

    Example::

        manifest = build_manifest("staging/llama", kind="alignment")
        manifest.save("staging/llama")
        verify("staging/llama")            # raises CorruptFileError if anything changed
    """

    kind: str
    files: dict[str, dict[str, Any]]
    created: str = field(default_factory=lambda: utc_now())

    def digest(self) -> str:
        """Identity of the content (not of the time it was made): equal files, equal digest."""
        listing = json.dumps(
            {p: f["sha256"] for p, f in sorted(self.files.items())}, sort_keys=True
        )
        return hashlib.sha256(f"{self.kind}\n{listing}".encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "kind": self.kind, "created": self.created, "files": self.files}

    @classmethod
    def from_dict(cls, data: Any, where: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CorruptFileError(f"{where} is not a {FORMAT} manifest")
        files = data.get("files")
        if not isinstance(files, dict) or not files:
            raise CorruptFileError(f"{where} lists no files")
        for rel, entry in files.items():
            safe_relpath(rel, where)
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("sha256"), str)
                or not isinstance(entry.get("size"), int)
            ):
                raise CorruptFileError(f"{where}: entry for {rel!r} needs 'sha256' and 'size'")
        return cls(kind=str(data.get("kind")), files=files, created=str(data.get("created", "")))

    def save(self, folder: str | Path) -> Path:
        return write_json_atomic(Path(folder) / MANIFEST_NAME, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            raise MissingFileError(
                f"{path} not found: {folder} is not a pe artifact (or was written by hand)"
            )
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptFileError(f"{path} is not valid JSON ({exc})") from exc
        return cls.from_dict(data, str(path))


def utc_now() -> str:
    # microseconds: versions pushed within one second must still order by creation
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def safe_relpath(rel: str, where: str = MANIFEST_NAME) -> str:
    """Refuse paths that could leave the artifact folder: a manifest from the Hub is not
    trusted until its files check out."""
    parts = PurePosixPath(rel).parts
    if (
        not rel
        or rel.startswith("/")
        or "\\" in rel
        or any(p in ("", ".", "..") for p in parts)
        or rel == MANIFEST_NAME
    ):
        raise CorruptFileError(f"{where} lists an unsafe or reserved path {rel!r}")
    return rel


def build_manifest(folder: str | Path, kind: str) -> Manifest:
    """Hash every file under ``folder``."""
    files = hash_files(folder)
    if not files:
        raise MissingFileError(f"{folder} holds no files")
    return Manifest(kind=kind, files=files)


def verify(
    folder: str | Path, manifest: Manifest | None = None, only: Iterable[str] | None = None
) -> Manifest:
    """Check ``folder`` against its manifest: every listed file present with the listed
    size and sha256, and (unless ``only`` picks some files) no file that is not listed.

    Raises :class:`CorruptFileError` (hash, size or extra file) or
    :class:`MissingFileError` (listed file absent).
    """
    root = Path(folder)
    manifest = manifest or Manifest.load(root)
    names = list(manifest.files) if only is None else list(only)
    for rel in names:
        if rel not in manifest.files:
            raise CorruptFileError(f"{root}: {rel} is not listed in {MANIFEST_NAME}")
        safe_relpath(rel)
    verify_listed_files(root, {rel: manifest.files[rel] for rel in names}, MANIFEST_NAME)
    if only is None:
        extra = sorted(set(list_files(root)) - set(manifest.files))
        if extra:
            raise CorruptFileError(
                f"{root} holds files its {MANIFEST_NAME} does not list: {extra}; the artifact "
                "was changed after it was published"
            )
    return manifest
