"""The public API: one function per verb; a reference's shape picks the place.

``name`` / ``name@version`` is the local registry, ``org/name`` / ``org/name@revision`` is
the Hub (see :mod:`pe_registry.refs`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from pe_core.errors import ArgumentTypeError, RegistryError
from pe_registry.entry import Entry
from pe_registry.hub import HubClient
from pe_registry.local import LocalRegistry, check_source
from pe_registry.refs import parse_ref, try_parse_ref
from pe_registry.remote import find_on_hub, pull_from_hub, push_to_hub, resolve_hub


def push(
    source: str | Path,
    to: str | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
    message: str | None = None,
    registry: LocalRegistry | None = None,
) -> Entry:
    """Publish an artifact folder or training run.

    ``to``: ``name`` / ``name@version`` (local registry; default: the folder's name) or
    ``org/name`` (Hub, one commit, needs a token). Returns the registry entry
    (``name@version`` or ``org/name@<commit>``); ``entry.prompting`` is the Prompting LLM
    published alongside, if the run had one.

    Example::

        push("runs/llama")                              # -> llama@1
        push("runs/llama", "my-org/pe-llama", private=True)
    """
    check_source(source)
    for what, value, kind, text in (("private", private, bool, "True or False"),
                                    ("token", token, str, "a string"),
                                    ("message", message, str, "a string")):
        if value is not None and not isinstance(value, kind):
            raise ArgumentTypeError(f"{what} must be {text} or None, got "
                                    f"{type(value).__name__} {value!r:.60}")
    registry = registry or LocalRegistry()
    if to is not None:
        parsed = parse_ref(to)
        if parsed.is_hub:
            if parsed.version is not None:
                raise RegistryError(
                    f"push to {parsed.name} without '@{parsed.version}': every push is a new "
                    "commit on main; tag it on the Hub if you need a name for it"
                )
            client = HubClient(token=token)
            return push_to_hub(source, parsed.name, registry, client, private, message)
        return registry.push(source, parsed.name, parsed.version)
    return registry.push(source)


def pull(
    ref: str,
    dest: str | Path | None = None,
    *,
    token: str | None = None,
    registry: LocalRegistry | None = None,
) -> Path:
    """A hash-checked local folder for ``ref`` (downloaded first for a Hub ref), copied
    to ``dest`` if given (which must not exist yet).

    Example::

        folder = pull("my-org/pe-llama@main")
    """
    registry = registry or LocalRegistry()
    parsed = parse_ref(ref)
    if parsed.is_hub:
        entry = pull_from_hub(parsed, registry, HubClient(token=token))
    else:
        entry = registry.get(ref)
    if dest is None:
        return entry.path
    return _copy_out(entry.path, Path(dest))


def list_artifacts(registry: LocalRegistry | None = None) -> list[dict[str, Any]]:
    """One row per registry entry: ref, kind, backbone, model id, d_P, d_B, K, score,
    created (rows of broken entries carry an ``error`` instead).

    Example::

        for row in list_artifacts():
            print(row["ref"], row["backbone"], row["d_P"], row["d_B"])
    """
    registry = registry or LocalRegistry()
    rows = []
    for entry in registry.entries():
        try:
            rows.append(entry.row())
        except (RegistryError, OSError, ValueError) as exc:
            rows.append(
                {
                    "ref": entry.ref,
                    "name": entry.name,
                    "version": entry.version,
                    "kind": entry.kind,
                    "error": str(exc),
                    "path": str(entry.path),
                }
            )
    return rows


def list_hub(
    author: str | None = None, *, token: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """pe alignments on the Hub (tag ``pe-alignment``), newest first.

    Example::

        list_hub(author="my-org")
    """
    from pe_registry.card import TAG_ALIGNMENT

    found = HubClient(token=token).search([TAG_ALIGNMENT], author=author, limit=limit)
    rows = []
    for info in found:
        backbone = next((t.split(":", 1)[1] for t in info.tags if t.startswith("backbone:")), None)
        model = next((t.split(":", 1)[1] for t in info.tags if t.startswith("pe-model:")), None)
        rows.append(
            {
                "ref": info.repo_id,
                "backbone": backbone,
                "model_id": model,
                "last_modified": info.last_modified,
            }
        )
    return rows


def remove(ref: str, *, force: bool = False, registry: LocalRegistry | None = None) -> list[str]:
    """Delete a registry entry (``name@version``), every version of ``name``, or the local
    copies of a Hub repo. Never touches the Hub. Returns the refs removed.

    Example::

        remove("llama@1")
    """
    return (registry or LocalRegistry()).remove(ref, force=force)


def resolve(
    ref: str, *, local: bool = True, hub: bool = True, registry: LocalRegistry | None = None
) -> Path | None:
    """The folder of a registry name (``local``) or Hub artifact (``hub``; pulled if
    needed), or None when ``ref`` is neither (a path, a plain Hub model, an unknown name).

    Example::

        resolve("llama@2")     # -> ~/.cache/pe/registry/artifacts/llama/2
    """
    parsed = try_parse_ref(ref)
    if parsed is None or not (hub if parsed.is_hub else local):
        return None
    registry = registry or LocalRegistry()
    if parsed.is_hub:
        return resolve_hub(ref, registry, HubClient())
    entry = registry.entry(parsed.name, parsed.version)
    return entry.path if entry is not None else None


def find(
    prompting_id: str,
    model_id: str,
    *,
    local: bool = True,
    hub: bool = True,
    registry: LocalRegistry | None = None,
) -> Path | None:
    """An alignment trained for (prompting model, backbone model): the best one in the
    registry (``local``: local names and pulled Hub copies), else (``hub``) the newest
    tagged one on the Hub, pulled.

    Example::

        find("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B")
    """
    registry = registry or LocalRegistry()
    entry = registry.find_alignment(prompting_id, model_id) if local else None
    if entry is not None:
        return entry.path
    if hub:
        return find_on_hub(prompting_id, model_id, registry, HubClient())
    return None


def _copy_out(src: Path, dest: Path) -> Path:
    if (dest.is_dir() and any(dest.iterdir())) or (dest.exists() and not dest.is_dir()):
        raise RegistryError(f"{dest} already exists; pick an empty or new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # copy next to dest, then rename: dest appears complete or not at all
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(src, tmp / "x")
        if dest.is_dir():
            dest.rmdir()
        (tmp / "x").rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
