"""Places that store trained artifacts (e.g. the local registry), added by plugins
through ``pe_register_publishers``. A publisher only stores; finding and fetching
artifacts is a resolver's job (:mod:`pe_core.plugins.resolvers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pe_core.errors import PEError

PublishFn = Callable[[Path, str], Any]


@dataclass(frozen=True)
class Publisher:
    name: str
    publish: PublishFn  # publish(folder, name) -> what the store made of it


class PublisherRegistry:
    """Name -> :class:`Publisher`.

    Example::

        registry.register("registry", push_to_local_registry)
        registry.get("registry").publish(Path("runs/llama"), "llama")
    """

    def __init__(self) -> None:
        self._publishers: dict[str, Publisher] = {}

    def register(self, name: str, publish: PublishFn) -> None:
        """Add a publisher: ``publish(folder, name)`` stores the run or artifact in
        ``folder`` under ``name`` and returns what the store says (e.g. its entry)."""
        if name in self._publishers:
            raise PEError(f"publisher {name!r} is registered twice")
        self._publishers[name] = Publisher(name, publish)

    def get(self, name: str) -> Publisher | None:
        """The publisher called ``name``, or None when no plugin installed it."""
        return self._publishers.get(name)

    def __iter__(self) -> Iterator[Publisher]:
        return iter(self._publishers.values())
