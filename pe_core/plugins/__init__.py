"""The plugin system: the hook specifications (:mod:`.hookspecs`), the one manager that
loads entry points (:mod:`.manager`), and one registry per hook (:mod:`.backbones`,
:mod:`.resolvers`, :mod:`.publishers`, :mod:`.exporters`)."""

from pe_core.plugins.manager import (  # noqa: F401  (public API)
    PluginInfo,
    PluginManager,
    get_backbone,
    get_plugin_manager,
    reset_plugin_manager,
)
