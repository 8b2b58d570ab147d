"""The Hugging Face Hub, through ``huggingface_hub``, with pe's typed errors.

Choices, and why:

* The endpoint is ``huggingface_hub``'s own (``HF_ENDPOINT`` as read when it was imported):
  passing another one per call breaks its URL parsing (``CommitInfo`` parses the commit
  URL against ``constants.ENDPOINT``). Offline mode is also checked when a call is made
  (``HF_HUB_OFFLINE`` in the environment now, or at import), so it can only get stricter.
* Every remote operation starts with one metadata call (``model_info``) with a short connect
  timeout and no retries. If it cannot connect, pe raises :class:`OfflineError` at once
  instead of entering ``huggingface_hub``'s download retry loop (~20 s on a dead endpoint).
* ``requests`` errors are caught as ``OSError``: ``requests.ConnectionError`` is not a
  subclass of the builtin ``ConnectionError``.
* Downloads go to a work folder with ``local_dir`` and a private ``cache_dir``, so a failed
  pull leaves nothing in the user's Hugging Face cache and nothing half-written anywhere.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pe_core.errors import (
    MissingFileError,
    OfflineError,
    PEError,
    RegistryError,
    RevisionNotFoundError,
)
from pe_registry.manifest import MANIFEST_NAME, Manifest

CONNECT_TIMEOUT_ENV = "PE_HUB_CONNECT_TIMEOUT"
DEFAULT_CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0
_TRUE = {"1", "ON", "YES", "TRUE"}


def endpoint() -> str:
    """The Hub URL ``huggingface_hub`` uses (``HF_ENDPOINT`` when it was imported)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or at import."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.upper() in _TRUE


@dataclass
class RemoteInfo:
    """A Hub repo at one commit."""

    repo_id: str
    commit: str
    files: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    last_modified: str | None = None

    @property
    def is_artifact(self) -> bool:
        return MANIFEST_NAME in self.files


class HubClient:
    """Thin wrapper over ``HfApi``: pe errors, pinned revisions, one commit per push.

    Example::

        client = HubClient()                              # token from HF_TOKEN / hf auth login
        info = client.info("my-org/pe-llama", "main")     # -> RemoteInfo(commit=...)
        client.download("my-org/pe-llama", info.commit, Path("work/files"), Path("work"))
    """

    def __init__(self, token: str | bool | None = None) -> None:
        self.token = token

    @property
    def endpoint(self) -> str:
        return endpoint()

    def api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint, token=self.token)

    def ensure_online(self, what: str) -> None:
        if is_offline():
            raise OfflineError(
                f"cannot {what}: offline mode is on (HF_HUB_OFFLINE=1); unset it to reach "
                f"{self.endpoint}"
            )

    # -- reading --------------------------------------------------------------------------
    def info(self, repo_id: str, revision: str | None = None) -> RemoteInfo:
        """Resolve ``revision`` (default ``main``) to a commit and list its files.

        Raises :class:`OfflineError` (offline mode, or the endpoint cannot be reached: fast,
        no retries), :class:`RevisionNotFoundError`, :class:`MissingFileError` (no such
        repo, or no access).
        """
        what = f"look up {repo_id}@{revision or 'main'}"
        self.ensure_online(what)
        timeout = (_connect_timeout(), READ_TIMEOUT)
        with hub_errors(what, self.endpoint, connection_means_offline=True):
            # a (connect, read) pair is passed straight to requests
            data = self.api().model_info(repo_id, revision=revision, timeout=timeout)  # type: ignore[arg-type]
        if not data.sha:
            raise RegistryError(f"{self.endpoint} returned no commit sha for {repo_id}")
        files = [s.rfilename for s in (data.siblings or [])]
        modified = data.last_modified.isoformat() if data.last_modified else None
        return RemoteInfo(repo_id, data.sha, files, list(data.tags or []), modified)

    def download(self, repo_id: str, commit: str, dest: Path, work: Path) -> Manifest:
        """Download the files listed in the manifest of ``repo_id@commit`` into ``dest``
        (``work`` holds the download cache); returns the (unverified) manifest."""
        from huggingface_hub import hf_hub_download, snapshot_download

        what = f"download {repo_id}@{commit[:12]}"
        self.ensure_online(what)
        cache = work / "hf-cache"
        common = dict(
            repo_id=repo_id,
            revision=commit,
            local_dir=dest,
            cache_dir=cache,
            endpoint=self.endpoint,
            token=self.token,
        )
        with hub_errors(what, self.endpoint, connection_means_offline=False):
            hf_hub_download(filename=MANIFEST_NAME, **common)  # type: ignore[arg-type]
            manifest = Manifest.load(dest)
            # only the artifact's own files (not .gitattributes or leftovers of old commits);
            # escaped because allow_patterns are fnmatch patterns
            patterns = [glob.escape(f) for f in manifest.files] + [MANIFEST_NAME]
            snapshot_download(allow_patterns=patterns, max_workers=4, **common)  # type: ignore[arg-type]
        shutil.rmtree(dest / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata
        return manifest

    def manifest(self, repo_id: str, commit: str, work: Path) -> Manifest:
        """The manifest of ``repo_id@commit``, downloaded into ``work``."""
        self.read(repo_id, commit, MANIFEST_NAME, work)
        return Manifest.load(work)

    def read(self, repo_id: str, commit: str, filename: str, work: Path) -> Path:
        """One file of ``repo_id@commit``, downloaded into ``work``; its path there."""
        from huggingface_hub import hf_hub_download

        what = f"read {filename} of {repo_id}@{commit[:12]}"
        with hub_errors(what, self.endpoint, connection_means_offline=False):
            hf_hub_download(
                repo_id,
                filename,
                revision=commit,
                local_dir=work,
                cache_dir=work / "hf-cache",
                token=self.token,
            )
        return work / filename

    def search(
        self, tags: list[str], author: str | None = None, limit: int = 100
    ) -> list[RemoteInfo]:
        """Repos carrying all ``tags``, most recently modified first."""
        what = f"search the Hub for {tags}"
        self.ensure_online(what)
        with hub_errors(what, self.endpoint, connection_means_offline=True):
            models = list(
                self.api().list_models(
                    filter=tags, author=author, limit=limit, sort="last_modified", direction=-1
                )
            )
        return [
            RemoteInfo(
                m.id,
                m.sha or "",
                tags=list(m.tags or []),
                last_modified=m.last_modified.isoformat() if m.last_modified else None,
            )
            for m in models
        ]

    # -- writing --------------------------------------------------------------------------
    def upload(
        self, folder: Path, repo_id: str, private: bool | None = None, message: str | None = None
    ) -> str:
        """Create ``repo_id`` if needed and upload ``folder`` as ONE commit; return its sha.

        A commit is atomic on the Hub: if the upload fails, the repo is unchanged.
        """
        what = f"push to {repo_id}"
        self.ensure_online(what)
        api = self.api()
        with hub_errors(what, self.endpoint, connection_means_offline=True):
            api.create_repo(repo_id, exist_ok=True, private=private, repo_type="model")
        with hub_errors(what, self.endpoint, connection_means_offline=False):
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                commit_message=message or f"pe: publish {repo_id}",
                repo_type="model",
            )
        return str(commit.oid)


def _connect_timeout() -> float:
    try:
        return float(os.environ.get(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT))
    except ValueError:
        return DEFAULT_CONNECT_TIMEOUT


def cached_in_hf_cache(repo_id: str, revision: str | None) -> bool:
    """Whether ``huggingface_hub``'s own cache holds this model (its ``config.json``)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # a malformed cache must not turn into a crash here
        return False
    return isinstance(found, str)


@contextmanager
def hub_errors(what: str, url: str, connection_means_offline: bool) -> Iterator[None]:
    """Turn ``huggingface_hub``/``requests`` errors into pe errors.

    ``connection_means_offline``: a connection failure on the first call of an operation
    means the Hub cannot be reached (:class:`OfflineError`); later in the operation it
    means the transfer was interrupted (:class:`RegistryError`).
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )
    from huggingface_hub.errors import RevisionNotFoundError as HubRevisionNotFound

    try:
        yield
    except PEError:
        raise  # already typed (e.g. CorruptFileError is also an OSError)
    except OfflineModeIsEnabled as exc:
        raise OfflineError(f"cannot {what}: offline mode is on (HF_HUB_OFFLINE=1)") from exc
    except HubRevisionNotFound as exc:
        raise RevisionNotFoundError(
            f"cannot {what}: the revision does not exist on {url}; check the branch, tag or "
            "commit (without a revision, 'main' is used)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise MissingFileError(
            f"cannot {what}: no such repository on {url}, or it is private and no valid token "
            "was sent (set HF_TOKEN or run `hf auth login`)"
        ) from exc
    except LocalEntryNotFoundError as exc:
        # huggingface_hub's wrapper for "the HEAD request failed and nothing is cached"
        if connection_means_offline:
            raise OfflineError(f"cannot {what}: {url} cannot be reached ({exc})") from exc
        raise RegistryError(
            f"cannot {what}: the connection was lost ({exc}); nothing was written, retry"
        ) from exc
    except EntryNotFoundError as exc:
        raise MissingFileError(f"cannot {what}: a file is missing on {url} ({exc})") from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise RegistryError(
                f"cannot {what}: {url} refused the token (HTTP {status}); set HF_TOKEN or run "
                "`hf auth login` with a token that has write access"
            ) from exc
        raise RegistryError(
            f"cannot {what}: {url} answered HTTP {status} ({exc.server_message or exc}); "
            "nothing was changed, retry later"
        ) from exc
    except OSError as exc:  # requests' errors, consistency checks, dropped connections
        if connection_means_offline and _is_connection_error(exc):
            raise OfflineError(
                f"cannot {what}: {url} cannot be reached ({type(exc).__name__}); check the "
                "network, or set HF_HUB_OFFLINE=1 to use what is already pulled"
            ) from exc
        if what.startswith("push"):
            raise RegistryError(
                f"cannot {what}: the upload was interrupted ({type(exc).__name__}: {exc}). A "
                "Hub commit is all or nothing and the local registry is unchanged: push again "
                "(if the commit did land, identical content makes no second one)"
            ) from exc
        raise RegistryError(
            f"cannot {what}: the transfer was interrupted ({type(exc).__name__}: {exc}); "
            "nothing was written, retry"
        ) from exc
    except ValueError as exc:  # invalid card metadata, malformed server answers
        raise RegistryError(f"cannot {what}: {exc}") from exc


def _is_connection_error(exc: BaseException) -> bool:
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError))
