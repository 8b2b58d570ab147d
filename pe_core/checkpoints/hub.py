"""The Hugging Face Hub as pe reads it: ``org/name@revision`` references, snapshot
downloads of safetensors-only model repos, the offline switch, and the client's errors
turned into pe's typed ones. A leaf module (it imports nothing else of pe but the errors),
so every reader of checkpoints can use it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pe_core.errors import MissingFileError, OfflineError, RevisionNotFoundError

HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "README.md"]


def split_revision(ref: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``."""
    name, sep, rev = ref.partition("@")
    return name, (rev if sep else None)


def download(ref: str) -> Path:
    """Fetch a Hub model (pinned revision if given) into the Hugging Face cache."""
    from huggingface_hub import snapshot_download

    repo_id, revision = split_revision(ref)
    with hub_errors(ref, repo_id, revision):
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=HUB_PATTERNS,
                local_files_only=hub_offline(),
            )
        )


@contextlib.contextmanager
def hub_errors(ref: str, repo_id: str, revision: str | None) -> Iterator[None]:
    """Turn the Hub client's errors for ``ref`` into pe's typed ones."""
    from huggingface_hub import errors
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )
    from huggingface_hub.errors import RevisionNotFoundError as HubRevisionNotFound

    # named RemoteEntryNotFoundError from huggingface_hub 1.0 on
    entry_not_found = getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)

    try:
        yield
    except HubRevisionNotFound as exc:
        raise RevisionNotFoundError(f"{repo_id} has no revision {revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise MissingFileError(
            f"{repo_id!r} is neither a local folder nor a Hub repository you can access"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise OfflineError(
            f"cannot download {ref!r}: the Hub is unreachable or HF_HUB_OFFLINE=1, and it "
            "is not in the local cache. Pass a local folder, or run once with network."
        ) from exc
    except entry_not_found as exc:
        raise MissingFileError(f"{repo_id} has no file named in {ref!r}") from exc
    except (OfflineModeIsEnabled, OSError) as exc:
        raise OfflineError(
            f"cannot download {ref!r}: the Hub is unreachable or HF_HUB_OFFLINE=1, and it "
            "is not in the local cache. Pass a local folder, or run once with network."
        ) from exc


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set now or when ``huggingface_hub``
    was imported: it reads the variable once, at import, into the session it reuses."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or flag.strip().upper() in {"1", "ON", "YES", "TRUE"}
