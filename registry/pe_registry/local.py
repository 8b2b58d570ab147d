"""The local registry: a folder of immutable, hash-checked artifact versions.

Layout (``$PE_REGISTRY``, default ``<user cache dir>/pe/registry``)::

    artifacts/<name>/<version>/      pushed here: files + pe_manifest.json
    hub/                             verified copies of Hub commits (:mod:`pe_registry.hub_cache`)
    .staging/                        work folders; same file system, so publishing is a rename
    .lock                            one file lock serialises every change

Why it is safe: an artifact is written completely in ``.staging`` and then renamed into
place, so readers never see half an artifact; versions never change once written; the lock
makes "pick the next version, rename" one step across processes; reads take no lock and
re-hash what they read against the manifest.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pe_core.errors import ArgumentTypeError, PEError, RegistryError
from pe_core.model.config import CONFIG_NAME, EmbedderConfig
from pe_registry.artifact import ALIGNMENT, PROMPTING, stage_for_publishing
from pe_registry.atomic import move_dir, remove_dir
from pe_registry.entry import Entry
from pe_registry.hub_cache import HubCache
from pe_registry.manifest import Manifest, utc_now, verify
from pe_registry.prompting import PROMPTING_NAME, PromptingInfo
from pe_registry.refs import VERSION_RE, check_name, parse_ref, try_parse_ref

ENV_VAR = "PE_REGISTRY"
STALE_STAGING_S = 24 * 3600


def default_root() -> Path:
    """``$PE_REGISTRY`` if set, else ``registry/`` under pe's cache (``$PE_CACHE`` or
    ``<user cache dir>/pe``), so one ``PE_CACHE`` moves everything pe writes."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from pe_core.data.cache import cache_dir

    return cache_dir() / "registry"


def default_name(source: str | Path) -> str:
    """A registry name from a folder name (``runs/llama`` -> ``llama``)."""
    raw = Path(source).resolve().name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:96] or "artifact"


class LocalRegistry:
    """A registry folder.

    Example::

        reg = LocalRegistry()                      # $PE_REGISTRY or the user cache dir
        entry = reg.push("runs/llama")             # -> llama@1 (+ llama-prompting@1)
        folder = reg.get("llama").path             # hash-checked, latest version
        reg.remove("llama@1")
    """

    def __init__(self, root: str | Path | None = None, lock_timeout: float = 300.0) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.lock_timeout = lock_timeout
        self.hub = HubCache(self.root / "hub", self.lock)

    # -- paths --------------------------------------------------------------------------
    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def staging_dir(self) -> Path:
        return self.root / ".staging"

    # -- concurrency --------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the registry's lock (across processes) for one change."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.root / ".lock"), timeout=self.lock_timeout)
        try:
            with self.writing():
                self.root.mkdir(parents=True, exist_ok=True)
                lock.acquire()
        except Timeout as exc:
            raise RegistryError(
                f"the registry {self.root} stayed locked for {self.lock_timeout:.0f}s; another "
                f"pe process is writing to it (or one died holding {self.root / '.lock'})"
            ) from exc
        try:
            with self.writing():
                yield
        finally:
            lock.release()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A change the file system refuses (a read-only registry, a folder of another
        user's) is a :class:`RegistryError` that says where, and the registry is left
        as it was: nothing moves into ``artifacts/`` until everything is staged."""
        try:
            yield
        except PermissionError as exc:
            where = exc.filename or self.root
            raise RegistryError(
                f"permission denied on {where}: the registry {self.root} is not writable "
                f"by this user; make it writable, or point {ENV_VAR} at a folder you can "
                "write"
            ) from None

    @contextmanager
    def staging(self, prefix: str = "op-", sweep: str | None = None) -> Iterator[Path]:
        """A fresh work folder on the registry's file system, deleted afterwards whatever
        happens, so a failed operation leaves nothing behind. ``sweep``: also delete every
        work folder of that prefix now, whatever its age (the caller holds the lock that
        every such folder is made under, so none of them is in use)."""
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._sweep_staging()
        for orphan in self.staging_dir.glob(f"{sweep}*") if sweep else ():
            shutil.rmtree(orphan, ignore_errors=True)
        path = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix=prefix))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _sweep_staging(self) -> None:
        # work folders of processes that were killed; a day is far longer than any pull
        cutoff = time.time() - STALE_STAGING_S
        for path in self.staging_dir.iterdir():
            try:
                if path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass

    # -- local names --------------------------------------------------------------------
    def versions(self, name: str) -> list[str]:
        """Versions of ``name``, oldest first."""
        folder = self.artifacts_dir / check_name(name)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            if path.is_dir() and VERSION_RE.match(path.name):
                try:
                    created = Manifest.load(path).created
                except PEError:
                    created = ""
                found.append((created, _numeric(path.name), path.name))
        return [v for *_, v in sorted(found)]

    def entry(self, name: str, version: str | None = None, check: bool = True) -> Entry | None:
        """The entry ``name@version`` (latest when None), hash-checked when ``check``;
        None when there is no such entry."""
        check_name(name)
        if version is None:
            versions = self.versions(name)
            if not versions:
                return None
            version = versions[-1]
        elif not VERSION_RE.match(version):
            return None
        path = self.artifacts_dir / name / version
        if not path.is_dir():
            return None
        manifest = verify(path) if check else Manifest.load(path)
        return Entry(f"{name}@{version}", path, manifest)

    def get(self, ref: str) -> Entry:
        """The hash-checked entry for a local ``name[@version]`` or a pulled
        ``org/repo[@revision]``; :class:`RegistryError` when it is not here."""
        parsed = parse_ref(ref)
        if parsed.is_hub:
            commit = self.hub.commit_for(parsed.name, parsed.version)
            found = self.hub.entry(parsed.name, commit) if commit else None
        else:
            found = self.entry(parsed.name, parsed.version)
        if found is None:
            known = ", ".join(self.versions(parsed.name)) if not parsed.is_hub else ""
            hint = f" (versions: {known})" if known else ""
            raise RegistryError(f"{ref!r} is not in the registry {self.root}{hint}; see `pe list`")
        return found

    def push(
        self, source: str | Path, name: str | None = None, version: str | None = None
    ) -> Entry:
        """Publish the artifact (or training run) in ``source`` as ``name@version``.

        ``version`` defaults to the next integer. Pushing content identical to an existing
        version returns that version. A run's ``prompting/`` folder is published too, as
        ``<name>-prompting``, and the alignment's ``prompting_id``/``prompting_revision``
        point at it. Raises :class:`DimensionMismatchError` (and the like) before anything
        is written.
        """
        check_source(source)
        name = check_name(default_name(source) if name is None else name)
        if version is not None and (not isinstance(version, str) or not VERSION_RE.match(version)):
            raise RegistryError(f"{version!r} is not a valid version (letters, digits, . _ -)")
        pending: list[tuple[Path, str]] = []

        def place_prompting(folder: Path, p_name: str) -> str:
            # the version it will get; it moves in only once the alignment is staged too
            self._check_writable(name, ALIGNMENT, artifact_backbone(folder, PROMPTING))
            pending.append((folder, check_name(p_name)))
            return self._place(folder, p_name, None, PROMPTING)[0]

        # every push-* folder is made under the lock, so one found there now was left by
        # a push that was killed
        with self.lock(), self.staging("push-", sweep="push-") as tmp:
            staged = stage_for_publishing(source, name, tmp, place_prompting)
            self._place(staged.folder, name, version, staged.kind)  # both or neither
            prompting = [self._commit(f, n, None, PROMPTING) for f, n in pending]
            entry = self._commit(staged.folder, name, version, staged.kind)
        entry.prompting = prompting[0] if prompting else None
        return entry

    def _check_writable(self, name: str, kind: str, backbone: str | None) -> None:
        """One name, one kind and one backbone: "llama" must not be an alignment in v1
        and a prompting in v2, nor a llama alignment in v1 and a gemma one in v2 (a
        reader of ``llama`` would get another model's alignment)."""
        versions = self.versions(name)
        if not versions:
            return
        other = Manifest.load(self.artifacts_dir / name / versions[0]).kind
        before = artifact_backbone(self.artifacts_dir / name / versions[-1], other)
        check_same_kind(name, (other, before), (kind, backbone),
                        f"remove {name} first (pe remove {name})")

    def _place(self, staged: Path, name: str, version: str | None,
               kind: str) -> tuple[str, Entry | None]:
        """The version a staged artifact will get as ``name``, and the entry that already
        holds the same content (None: a new version); raises before anything moves when
        it cannot be published there. The caller holds the lock."""
        self._check_writable(name, kind, artifact_backbone(staged, kind))
        digest = Manifest.load(staged).digest()
        existing = self.versions(name)
        for v in reversed(existing):
            if version not in (None, v):
                continue
            path = self.artifacts_dir / name / v
            old = Manifest.load(path)
            if old.digest() == digest:
                return v, Entry(f"{name}@{v}", path, verify(path, old))
            if version == v:
                raise RegistryError(
                    f"{name}@{v} already exists with other content; versions never change: "
                    "push without a version to get the next one"
                )
        if version is None:
            version = str(max((n for n in map(_numeric, existing) if n >= 0), default=0) + 1)
        return version, None

    def _commit(self, staged: Path, name: str, version: str | None, kind: str) -> Entry:
        """Rename a staged artifact into place; the caller holds the lock."""
        version, same = self._place(staged, name, version, kind)
        if same is not None:
            return same
        manifest = Manifest.load(staged)
        # stamped under the lock, so creation order is version order across processes
        manifest.created = utc_now()
        manifest.save(staged)
        dest = move_dir(staged, self.artifacts_dir / name / version)
        return Entry(f"{name}@{version}", dest, manifest)

    # -- listing and removal --------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """Every entry, local names first; manifests are read, files are not hashed."""
        out = []
        if self.artifacts_dir.is_dir():
            for name_dir in sorted(self.artifacts_dir.iterdir()):
                if name_dir.is_dir() and not name_dir.name.startswith("."):
                    for v in self.versions(name_dir.name):
                        out.append(self._entry_or_broken(name_dir / v, f"{name_dir.name}@{v}"))
        for repo_id in self.hub.repos():
            for commit in self.hub.commits(repo_id):
                out.append(self._entry_or_broken(self.hub.path(repo_id, commit),
                                                 f"{repo_id}@{commit}"))
        return out

    @staticmethod
    def _entry_or_broken(path: Path, ref: str) -> Entry:
        try:
            return Entry(ref, path, Manifest.load(path))
        except PEError as exc:
            # listed as broken (row() raises exc again) so `pe list` can say which one
            # and what is wrong with it
            return Entry(ref, path, Manifest(kind="broken", files={}), broken=exc)

    def remove(self, ref: str, force: bool = False) -> list[str]:
        """Delete ``name@version`` (or every version of ``name``), or the local copies of a
        Hub repo (one revision, or all). A Prompting LLM that a registered alignment uses
        is kept unless ``force``. Returns the refs removed.

        Example::

            LocalRegistry().remove("llama@1")
        """
        parsed = parse_ref(ref)
        trash = self.staging_dir
        with self.lock():
            if parsed.is_hub:
                commits = self.hub.remove(parsed.name, parsed.version, trash)
                if not commits:
                    raise RegistryError(f"{ref!r} is not in the registry {self.root}")
                return [f"{parsed.name}@{c}" for c in commits]
            versions = self.versions(parsed.name)
            if parsed.version is not None:
                versions = [parsed.version] if parsed.version in versions else []
            if not versions:
                raise RegistryError(f"{ref!r} is not in the registry {self.root}; see `pe list`")
            if not force:
                self._check_unused(parsed.name, versions)
            for v in versions:
                remove_dir(self.artifacts_dir / parsed.name / v, trash)
            try:
                (self.artifacts_dir / parsed.name).rmdir()
            except OSError:
                pass  # other versions remain
            return [f"{parsed.name}@{v}" for v in versions]

    def _check_unused(self, name: str, versions: list[str]) -> None:
        for entry in self.entries():
            if entry.kind != ALIGNMENT or entry.name == name:
                continue
            try:
                cfg = EmbedderConfig.load(entry.path)
            except (PEError, OSError):
                continue
            if cfg.prompting_id == name and (
                cfg.prompting_revision in versions or cfg.prompting_revision is None
            ):
                raise RegistryError(
                    f"{entry.ref} uses {name}@{cfg.prompting_revision} as its Prompting LLM; "
                    f"remove {entry.ref} first, or pass force=True (--force)"
                )

    def find_alignment(self, prompting_id: str, model_id: str) -> Entry | None:
        """The best registered alignment for (prompting model, backbone model): highest
        score, then newest; hash-checked. None when there is none.

        An alignment published with its trained Prompting LLM points at that artifact
        (``<name>-prompting``); it matches the model that Prompting LLM was trained from
        (its ``pe_prompting.json`` ``base_model``), which is what training recorded."""
        best: tuple[Any, ...] | None = None
        chosen = None
        for entry in self.entries():
            if entry.kind != ALIGNMENT:
                continue
            try:
                row = entry.row()
            except (PEError, OSError):
                continue  # a broken entry is skipped here; `pe list` shows it
            if row["model_id"] != model_id:
                continue
            if row["prompting_id"] != prompting_id and self._trained_from(entry) != prompting_id:
                continue
            key = (row["score"] is not None, row["score"] or 0.0, row["created"])
            if best is None or key > best:
                best, chosen = key, entry
        if chosen is None:
            return None
        verify(chosen.path, chosen.manifest)
        return chosen

    def _trained_from(self, alignment: Entry) -> str | None:
        """The base model of the Prompting LLM an alignment points at, when that is a
        prompting artifact here (a registry version or a pulled Hub commit)."""
        try:
            cfg = EmbedderConfig.load(alignment.path)  # hash-checked by row() just before
            ref = try_parse_ref(cfg.prompting_id or "")
            if ref is None or ref.version is not None or not cfg.prompting_revision:
                return None
            if ref.is_hub:
                linked = self.hub.entry(ref.name, cfg.prompting_revision, check=False)
            else:
                linked = self.entry(ref.name, cfg.prompting_revision, check=False)
            if linked is None or linked.kind != PROMPTING:
                return None
            return linked.row()["model_id"]  # pe_prompting.json's base_model, hash-checked
        except (PEError, OSError):
            return None

    def read_config(self, entry: Entry) -> EmbedderConfig:
        verify(entry.path, entry.manifest, only=[CONFIG_NAME])
        return EmbedderConfig.load(entry.path)


def check_source(source: object) -> Path:
    """A folder to publish given as a string or path (``push(None)`` would publish the
    current folder's name)."""
    if not isinstance(source, str | os.PathLike) or str(source) == "":
        raise ArgumentTypeError(
            f"source must be a folder path (str or pathlib.Path), got "
            f"{type(source).__name__} {source!r:.60}"
        )
    return Path(source)


def check_same_kind(name: str, held: tuple[str, str | None], new: tuple[str, str | None],
                    or_else: str) -> None:
    """One name (a local name or a Hub repo), one kind and one backbone: ``held`` is the
    (kind, backbone) that ``name`` holds, ``new`` what is being published there. A
    reader of a llama alignment must not get a gemma one, nor a Prompting LLM, from the
    same name. ``or_else``: the other way out, said in the error."""
    (before_kind, before), (kind, backbone) = held, new
    if before_kind != kind:
        raise RegistryError(
            f"{name!r} already names an artifact of kind {before_kind!r}; pick another name "
            f"for this {kind!r} one"
        )
    if None not in (before, backbone) and before != backbone:
        raise RegistryError(
            f"{name!r} holds {kind}s for backbone {before!r}, this one is for "
            f"{backbone!r}: push it under another name (e.g. {name}-{backbone}), or "
            f"{or_else}"
        )


def artifact_file(kind: str) -> str:
    """The file of an artifact that says which backbone it is for."""
    return CONFIG_NAME if kind == ALIGNMENT else PROMPTING_NAME


def artifact_backbone(folder: Path, kind: str) -> str | None:
    """The backbone an artifact folder was trained for (None when it does not say)."""
    try:
        if kind == ALIGNMENT:
            return EmbedderConfig.load(folder).backbone
        return PromptingInfo.load(folder).backbone
    except (PEError, OSError, ValueError):
        return None


def _numeric(version: str) -> int:
    return int(version) if version.isdigit() else -1
