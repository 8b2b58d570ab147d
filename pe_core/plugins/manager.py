"""The one plugin manager. Entry points in the group ``pe_core`` load lazily, one by one,
on first use, so a plugin that fails to import is reported, not fatal.

Environment:
    PE_LOAD_PLUGINS: comma-separated entry-point or distribution names to load (empty:
        none); unset loads all.
    PE_TRACE_HOOKS: set to 1 to print every hook call to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar, cast

import pluggy

from pe_core.errors import PluginError
from pe_core.plugins import hookspecs
from pe_core.plugins.backbones import BackboneRegistry
from pe_core.plugins.exporters import ExporterRegistry
from pe_core.plugins.publishers import PublisherRegistry
from pe_core.plugins.resolvers import ResolverRegistry, resolve_local

R = TypeVar("R")


@dataclass
class PluginInfo:
    """What ``pe plugins`` reports for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    backbones: list[str]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "backbones": self.backbones,
            "error": self.error,
        }


class PluginManager:
    """Wraps a :class:`pluggy.PluginManager` with lazy entry-point loading."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._loaded = False
        self._infos: dict[str, PluginInfo] = {}
        self._backbones: BackboneRegistry | None = None
        self._filled: dict[str, Any] = {}  # hook name -> the registry it filled
        if os.environ.get("PE_TRACE_HOOKS"):
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
            self.pm.enable_tracing()

    # -- loading -----------------------------------------------------------------
    def load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        wanted = os.environ.get("PE_LOAD_PLUGINS")
        allow = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        for ep in metadata.entry_points(group=hookspecs.PROJECT):
            dist = ep.dist.name if ep.dist is not None else None
            if allow is not None and ep.name not in allow and dist not in allow:
                continue
            version = ep.dist.version if ep.dist is not None else None
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not stop the others
                self._infos[ep.name] = PluginInfo(
                    ep.name, dist, version, [], error=f"{type(exc).__name__}: {exc}"
                )
                continue
            self._infos[ep.name] = PluginInfo(ep.name, dist, version, [])
        self._check_pending()

    def register(self, plugin: Any, name: str, distribution: str | None = None) -> None:
        """Register an in-process plugin (tests, notebooks); invalidates the registries."""
        self.load()
        self.pm.register(plugin, name=name)
        self._infos[name] = PluginInfo(name, distribution or name, None, [])
        self._check_pending()
        self._forget_registries()

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._infos.pop(name, None)
        self._forget_registries()

    def _forget_registries(self) -> None:
        self._backbones = None
        self._filled = {}

    def _check_pending(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {exc.plugin!r} implements a hook pe does not define: {exc}. "
                "Hook names start with 'pe_'; check the spelling against pe_core.plugins.hookspecs"
            ) from exc

    # -- registries --------------------------------------------------------------
    def backbones(self) -> BackboneRegistry:
        if self._backbones is None:
            self.load()
            registry = BackboneRegistry()
            for name, plugin in self.pm.list_name_plugin():
                info = self._infos.get(name)
                registry._current_distribution = (info.distribution if info else None) or name
                before = set(registry.names())
                caller = self.pm.subset_hook_caller(
                    "pe_register_backbones",
                    [p for p in self.pm.get_plugins() if p is not plugin],
                )
                caller(registry=registry)
                if info is not None:
                    info.backbones = sorted(set(registry.names()) - before)
            self._backbones = registry
        return self._backbones

    def _fill(self, hook: str, make: Callable[[], R]) -> R:
        """The registry ``make()`` returns, filled once by every plugin's ``hook``, then kept."""
        if hook not in self._filled:
            self.load()
            registry = make()
            getattr(self.pm.hook, hook)(registry=registry)
            self._filled[hook] = registry
        return cast(R, self._filled[hook])

    def resolvers(self) -> ResolverRegistry:
        return self._fill("pe_register_resolvers", _with_folder_resolver)

    def exporters(self) -> ExporterRegistry:
        return self._fill("pe_register_exporters", ExporterRegistry)

    def publishers(self) -> PublisherRegistry:
        return self._fill("pe_register_publishers", PublisherRegistry)

    def infos(self) -> list[PluginInfo]:
        self.backbones()
        return [self._infos[k] for k in sorted(self._infos)]

    @property
    def hook(self) -> Any:
        self.load()
        return self.pm.hook


def _with_folder_resolver() -> ResolverRegistry:
    from pe_core import zoo  # here, not at the top: the plugin manager loads before models

    registry = ResolverRegistry()
    registry.register("folder", resolve_local, None, priority=0)  # plain folders first
    # the trained models shipped in pe_core; last, so one's own alignment for a pair wins
    registry.register("zoo", zoo.resolve, zoo.find, priority=1000)
    return registry


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager (created, not loaded, on first call)."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugin_manager() -> None:
    """Forget loaded plugins (tests that change ``PE_LOAD_PLUGINS``)."""
    global _manager
    _manager = None


def get_backbone(name: str):  # type: ignore[no-untyped-def]
    """The registered :class:`~pe_core.plugins.backbones.BackboneSpec` called ``name``."""
    return get_plugin_manager().backbones().get(name)
