"""One artifact version in the registry: a local ``name@version`` or a Hub copy
``org/repo@<commit>``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_registry.artifact import summarize
from pe_registry.manifest import Manifest


@dataclass
class Entry:
    """One artifact version in the registry.

    ``ref`` is what resolves to it again: ``llama@2`` or ``org/repo@<commit>``.
    """

    ref: str
    path: Path
    manifest: Manifest
    prompting: Entry | None = None
    broken: Exception | None = None  # why its manifest could not be read


    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def name(self) -> str:
        return self.ref.partition("@")[0]

    @property
    def version(self) -> str:
        return self.ref.partition("@")[2]

    def row(self) -> dict[str, Any]:
        """What ``pe list`` shows; config files are hash-checked as they are read. An
        entry whose manifest could not be read raises that error again."""
        if self.broken is not None:
            raise self.broken
        return {
            "ref": self.ref,
            "name": self.name,
            "version": self.version,
            **summarize(self.path, self.manifest),
            "path": str(self.path),
        }
