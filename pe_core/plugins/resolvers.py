"""Alignment resolvers: turn an alignment reference (registry name, Hub repo, folder)
into a local folder, and find an alignment for a (prompting model, backbone model) pair.

pe-core knows only local folders; pe-registry adds the local registry and the Hub
through ``pe_register_resolvers``, so the core never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ResolveFn = Callable[[str], "Path | None"]
FindFn = Callable[[str, str], "Path | None"]


@dataclass(frozen=True)
class Resolver:
    name: str
    resolve: ResolveFn
    find: FindFn | None
    priority: int


class ResolverRegistry:
    """Resolvers tried in priority order (lowest first)."""

    def __init__(self) -> None:
        self._resolvers: list[Resolver] = []

    def register(
        self,
        name: str,
        resolve: ResolveFn,
        find: FindFn | None = None,
        priority: int = 50,
    ) -> None:
        """Add a resolver. ``resolve(ref)`` returns a folder or None when ``ref`` is not
        its kind; ``find(prompting_id, model_id)`` returns a matching artifact or None.
        (Storing artifacts is a publisher's job: :mod:`pe_core.plugins.publishers`.)"""
        self._resolvers.append(Resolver(name, resolve, find, priority))
        self._resolvers.sort(key=lambda r: r.priority)

    def get(self, name: str) -> Resolver | None:
        return next((r for r in self._resolvers if r.name == name), None)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._resolvers)


def resolve_local(ref: str) -> Path | None:
    path = Path(ref).expanduser()
    return path if path.is_dir() else None
