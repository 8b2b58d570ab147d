"""Artifact references.

A reference names an artifact in one of two places:

* the local registry: ``name`` (latest version) or ``name@version``;
* the Hub: ``org/name`` (branch ``main``) or ``org/name@revision`` (branch, tag or commit).

The slash is what tells them apart, so local names never contain one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pe_core.errors import ArgumentTypeError, RegistryError

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
NAME_RE = re.compile(rf"^{_PART}$")
REPO_RE = re.compile(rf"^{_PART}/{_PART}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Hub revisions may be branch names with slashes (``refs/pr/1``); ".." is refused so a
# revision can never be used to climb out of a folder.
REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference.

    Example::

        >>> parse_ref("my-org/pe-llama@v1")
        Ref(name='my-org/pe-llama', version='v1')
    """

    name: str
    version: str | None = None

    @property
    def is_hub(self) -> bool:
        return "/" in self.name

    @property
    def org(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def repo(self) -> str:
        return self.name.split("/", 1)[1]

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


def parse_ref(ref: str) -> Ref:
    """Parse ``ref``; raise :class:`RegistryError` when it is not a valid reference."""
    _check_str(ref, "reference")
    parsed = try_parse_ref(ref)
    if parsed is None:
        raise RegistryError(
            f"{ref!r} is not an artifact reference: use a registry name ('llama', "
            "'llama@2') or a Hub repo ('org/name', 'org/name@revision')"
        )
    return parsed


def try_parse_ref(ref: str) -> Ref | None:
    """Like :func:`parse_ref` but None for anything that is not a reference (a path, a
    ``scheme:`` id) so resolvers can let other resolvers try."""
    name, sep, version = str(ref).partition("@")
    if sep and not version:
        return None
    if REPO_RE.match(name):
        if sep and (not REVISION_RE.match(version) or ".." in version):
            return None
        return Ref(name, version or None)
    if NAME_RE.match(name):
        if sep and not VERSION_RE.match(version):
            return None
        return Ref(name, version or None)
    return None


def check_name(name: str) -> str:
    """A valid local registry name, or :class:`RegistryError`."""
    _check_str(name, "registry name")
    if not NAME_RE.match(name):
        raise RegistryError(
            f"{name!r} is not a valid registry name: letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 96 characters, no '/'"
        )
    return name


def check_repo_id(repo_id: str) -> str:
    """A valid Hub repo id ``org/name``, or :class:`RegistryError`."""
    _check_str(repo_id, "Hub repo id")
    if not REPO_RE.match(repo_id):
        raise RegistryError(f"{repo_id!r} is not a Hub repo id of the form 'org/name'")
    return repo_id


def _check_str(value: object, what: str) -> None:
    # str(None) is the valid name "None": a non-string must not get that far
    if not isinstance(value, str):
        raise ArgumentTypeError(
            f"a {what} must be a string such as 'llama', 'llama@2' or 'org/name', got "
            f"{type(value).__name__} {value!r:.60}"
        )
