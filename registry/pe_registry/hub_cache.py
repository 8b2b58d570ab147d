"""Verified copies of Hub commits, kept in the registry folder for offline use.

Layout (under the registry root)::

    hub/<org>/<repo>/<commit>/      a commit pulled or pushed: files + pe_manifest.json
    hub/<org>/<repo>/index.json     revision -> commit seen at the last pull

A commit never changes, so a copy is renamed into place once and only read afterwards;
the index is what lets ``org/repo@main`` resolve with the Hub out of reach.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pe_core.errors import CorruptFileError, RegistryError
from pe_registry.atomic import move_dir, remove_dir, write_json_atomic
from pe_registry.entry import Entry
from pe_registry.manifest import Manifest, utc_now, verify
from pe_registry.refs import COMMIT_RE, check_repo_id


class HubCache:
    """The Hub copies of one registry; ``lock`` is the registry's lock, held for every
    change.

    Example::

        cache = LocalRegistry().hub
        cache.commit_for("my-org/pe-llama", "main")   # the commit pulled last for main
    """

    def __init__(self, root: Path, lock: Callable[[], AbstractContextManager[None]]) -> None:
        self.root = root
        self.lock = lock

    def path(self, repo_id: str, commit: str) -> Path:
        check_repo_id(repo_id)
        if not COMMIT_RE.match(commit):
            raise RegistryError(f"{commit!r} is not a full commit sha")
        return self.root / repo_id / commit

    def index(self, repo_id: str) -> dict[str, Any]:
        """``{"refs": {revision: commit}, "pulled": {commit: time}}`` of ``repo_id``."""
        path = self.root / check_repo_id(repo_id) / "index.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {"refs": {}, "pulled": {}}
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptFileError(f"{path} is not valid JSON ({exc}); delete it") from exc
        return {"refs": dict(data.get("refs", {})), "pulled": dict(data.get("pulled", {}))}

    def commits(self, repo_id: str) -> list[str]:
        folder = self.root / check_repo_id(repo_id)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and COMMIT_RE.match(p.name))

    def commit_for(self, repo_id: str, revision: str | None) -> str | None:
        """The commit a Hub revision pointed at when it was last pulled (offline use)."""
        commits = self.commits(repo_id)
        if not commits:
            return None
        index = self.index(repo_id)
        if revision is None:
            revision = "main"
            if revision not in index["refs"]:
                # pulled only by commit: take the most recently pulled one
                pulled = index["pulled"]
                return max(commits, key=lambda c: (pulled.get(c, ""), c))
        if revision in commits:
            return revision
        commit = index["refs"].get(revision)
        if commit in commits:
            return commit
        if re.fullmatch(r"[0-9a-f]{7,39}", revision):
            matches = [c for c in commits if c.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def entry(self, repo_id: str, commit: str, check: bool = True) -> Entry | None:
        path = self.path(repo_id, commit)
        if not path.is_dir():
            return None
        manifest = verify(path) if check else Manifest.load(path)
        return Entry(f"{repo_id}@{commit}", path, manifest)

    def add_snapshot(self, staged: Path, repo_id: str, commit: str, revisions: list[str]) -> Entry:
        """Rename a verified download of ``repo_id@commit`` into place and remember which
        revisions pointed at it."""
        dest = self.path(repo_id, commit)
        with self.lock():
            if not dest.exists():
                move_dir(staged, dest)
            self._record_refs(repo_id, commit, revisions)
        return self.entry(repo_id, commit)  # type: ignore[return-value]

    def record_refs(self, repo_id: str, commit: str, revisions: list[str]) -> None:
        with self.lock():
            self._record_refs(repo_id, commit, revisions)

    def _record_refs(self, repo_id: str, commit: str, revisions: list[str]) -> None:
        index = self.index(repo_id)
        for rev in revisions:
            if rev and rev != commit:
                index["refs"][rev] = commit
        index["pulled"][commit] = utc_now()
        write_json_atomic(self.root / repo_id / "index.json", index)

    def repos(self) -> list[str]:
        """Every ``org/repo`` with a folder here."""
        if not self.root.is_dir():
            return []
        return [f"{org.name}/{repo.name}"
                for org in sorted(p for p in self.root.iterdir() if p.is_dir())
                for repo in sorted(p for p in org.iterdir() if p.is_dir())]

    def remove(self, repo_id: str, revision: str | None, trash: Path) -> list[str]:
        """Delete the copy of one revision (every copy when None); the caller holds the
        lock. Returns the commits removed (none when nothing matched)."""
        commits = self.commits(repo_id)
        if revision is not None:
            one = self.commit_for(repo_id, revision)
            commits = [one] if one else []
        for c in commits:
            remove_dir(self.path(repo_id, c), trash)
        if not commits:
            return []
        index = self.index(repo_id)
        index["refs"] = {r: c for r, c in index["refs"].items() if c not in commits}
        index["pulled"] = {c: t for c, t in index["pulled"].items() if c not in commits}
        if self.commits(repo_id):
            write_json_atomic(self.root / repo_id / "index.json", index)
        else:
            shutil.rmtree(self.root / repo_id, ignore_errors=True)
        return commits
