"""The plugin hooks. A plugin implements any of them with ``@pe_core.hookimpl``.

Hooks are few and each receives a registry object to add to (tox style), so the
signatures never need to change when a registry grows a feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pe_core.plugins.backbones import BackboneRegistry
    from pe_core.plugins.exporters import ExporterRegistry
    from pe_core.plugins.publishers import PublisherRegistry
    from pe_core.plugins.resolvers import ResolverRegistry

PROJECT = "pe_core"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def pe_register_backbones(registry: BackboneRegistry) -> None:
    """Register backbone families with ``registry.register(BackboneSpec(...))``.

    Example::

        @pe_core.hookimpl
        def pe_register_backbones(registry):
            registry.register(BackboneSpec(name="phi3", model_types=("phi3",), ...))
    """


@hookspec
def pe_register_resolvers(registry: ResolverRegistry) -> None:
    """Register alignment resolvers (name -> local folder), e.g. a registry or the Hub.

    Example::

        @pe_core.hookimpl
        def pe_register_resolvers(registry):
            registry.register("local", resolve_fn, find_fn, priority=10)
    """


@hookspec
def pe_register_publishers(registry: PublisherRegistry) -> None:
    """Register places that store trained runs: ``registry.register(name, publish)``
    where ``publish(folder, name)`` stores the run or artifact in ``folder`` as ``name``.

    Example::

        @pe_core.hookimpl
        def pe_register_publishers(registry):
            registry.register("registry", push_fn)
    """


@hookspec
def pe_register_exporters(registry: ExporterRegistry) -> None:
    """Register deployment backends: ``registry.register(name, export, load)`` where
    ``export(embedder, instruction, out_dir, **options)`` writes a folder and
    ``load(folder)`` returns an encoder with the torch embedder's ``encode`` signature.

    Example::

        @pe_core.hookimpl
        def pe_register_exporters(registry):
            registry.register("onnx", export_onnx, OnnxEmbedder)
    """


@hookspec
def pe_register_commands(cli: Any) -> None:
    """Add sub-commands to the ``pe`` CLI; ``cli`` is the root ``argparse`` sub-parsers
    object. Each command sets ``func`` with ``parser.set_defaults(func=...)``.

    Example::

        @pe_core.hookimpl
        def pe_register_commands(cli):
            p = cli.add_parser("push", help="publish an artifact")
            p.set_defaults(func=run_push)
    """
