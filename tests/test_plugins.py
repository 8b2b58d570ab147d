"""The plugin mechanism: discovery, PE_LOAD_PLUGINS, broken plugins, duplicates."""

import json
import types

import pytest

import pe_core
from pe_core.errors import DuplicateBackboneError, PluginError, UnknownBackboneError
from pe_core.plugins.backbones import BackboneSpec

FAMILIES = {"llama", "mistral", "qwen", "gemma"}


def make_plugin(**hooks):
    """An in-process plugin: a module object whose attributes are hookimpls."""
    module = types.ModuleType("test_plugin")
    for name, fn in hooks.items():
        setattr(module, name, pe_core.hookimpl(fn))
    return module


def test_all_four_families_discovered(fresh_plugins):
    registry = fresh_plugins.get_plugin_manager().backbones()
    assert FAMILIES <= set(registry.names())
    assert registry.get("qwen").model_types == ("qwen2", "qwen3")
    assert registry.get("gemma").model_types == ("gemma", "gemma2", "gemma3_text")
    assert registry.get("llama").distribution == "pe-plugin-llama"


def test_pe_load_plugins_limits_loading(fresh_plugins, monkeypatch):
    monkeypatch.setenv("PE_LOAD_PLUGINS", "llama,pe-plugin-qwen")
    names = fresh_plugins.get_plugin_manager().backbones().names()
    assert set(names) & FAMILIES == {"llama", "qwen"}
    monkeypatch.setenv("PE_LOAD_PLUGINS", "")
    fresh_plugins.reset_plugin_manager()
    assert fresh_plugins.get_plugin_manager().backbones().names() == []


def test_unknown_backbone_lists_installed_and_pip_command(fresh_plugins):
    with pytest.raises(UnknownBackboneError) as err:
        pe_core.load(backbone="falcon")
    msg = str(err.value)
    assert "pip install pe-plugin-falcon" in msg and "llama" in msg and "gemma" in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, pe_core.PEError)


def test_duplicate_backbone_names_both_distributions(fresh_plugins):
    plugin = make_plugin(
        pe_register_backbones=lambda registry: registry.register(BackboneSpec("llama", ("llama",)))
    )
    manager = fresh_plugins.get_plugin_manager()
    manager.register(plugin, name="copycat", distribution="pe-plugin-copycat")
    with pytest.raises(DuplicateBackboneError) as err:
        manager.backbones()
    assert "pe-plugin-llama" in str(err.value) and "pe-plugin-copycat" in str(err.value)


def test_misspelt_hook_fails_loudly(fresh_plugins):
    plugin = make_plugin(pe_register_backbone=lambda registry: None)
    with pytest.raises(PluginError, match="pe_register_backbone"):
        fresh_plugins.get_plugin_manager().register(plugin, name="typo")


def test_broken_plugin_is_reported_not_fatal(fresh_plugins, monkeypatch):
    from importlib import metadata

    real = metadata.entry_points

    class BrokenEP:
        name, value, group = "broken", "pe_plugin_does_not_exist", "pe_core"
        dist = types.SimpleNamespace(name="pe-plugin-broken", version="9.9")

        def load(self):
            raise ImportError("No module named 'pe_plugin_does_not_exist'")

    def fake_entry_points(group=None):
        return list(real(group=group)) + [BrokenEP()]

    monkeypatch.setattr(metadata, "entry_points", fake_entry_points)
    manager = fresh_plugins.get_plugin_manager()
    infos = {i.name: i for i in manager.infos()}
    assert infos["broken"].error.startswith("ImportError")
    assert infos["broken"].distribution == "pe-plugin-broken"
    assert FAMILIES <= set(manager.backbones().names())


def test_pe_plugins_cli_json(fresh_plugins, capsys):
    from pe_core.cli.main import main

    assert main(["plugins"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["plugin"]: r for r in rows}
    assert by_name["gemma"]["backbones"] == ["gemma"]
    assert by_name["gemma"]["distribution"] == "pe-plugin-gemma"
    assert by_name["gemma"]["version"] == "0.1.0" and by_name["gemma"]["error"] is None


def test_every_hook_is_tested_and_documented():
    """Hook docs and tests cannot drift (datasette style)."""
    import pathlib

    from pe_core.plugins import hookspecs

    hooks = [n for n in dir(hookspecs) if n.startswith("pe_")]
    assert hooks
    page = pathlib.Path(__file__).parents[1] / "docs" / "plugins.md"
    documented = page.read_text()
    here = pathlib.Path(__file__).parent
    tests = "".join(p.read_text() for p in here.glob("test_*.py"))
    for hook in hooks:
        assert f"`{hook}" in documented, f"{hook} is not documented in {page}"
        assert f"def test_hook_{hook}" in tests, f"{hook} has no test_hook_{hook}"
        assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


def test_hook_pe_register_backbones(fresh_plugins):
    seen = []
    plugin = make_plugin(
        pe_register_backbones=lambda registry: seen.append(registry)
        or registry.register(BackboneSpec("toy", ("toy_type",)))
    )
    manager = fresh_plugins.get_plugin_manager()
    manager.register(plugin, name="toy", distribution="pe-plugin-toy")
    assert manager.backbones().get("toy").distribution == "pe-plugin-toy"
    assert manager.backbones().for_model_type("toy_type").name == "toy"
    assert len(seen) == 1


def test_hook_pe_register_resolvers(fresh_plugins, tmp_path):
    target = tmp_path / "artifact"
    target.mkdir()
    plugin = make_plugin(
        pe_register_resolvers=lambda registry: registry.register(
            "toy", lambda ref: target if ref == "toy:name" else None, priority=5
        )
    )
    manager = fresh_plugins.get_plugin_manager()
    manager.register(plugin, name="toy-resolver")
    names = [r.name for r in manager.resolvers()]
    assert names[0] == "folder" and "toy" in names
    found = [r.resolve("toy:name") for r in manager.resolvers() if r.name == "toy"]
    assert found == [target]


def test_hook_pe_register_commands(fresh_plugins, capsys):
    def add(cli):
        p = cli.add_parser("hello", help="say hello")
        p.set_defaults(func=lambda args: print("hello from a plugin") or 0)

    plugin = make_plugin(pe_register_commands=add)
    fresh_plugins.get_plugin_manager().register(plugin, name="hello")
    from pe_core.cli.main import main

    assert main(["hello"]) == 0
    assert "hello from a plugin" in capsys.readouterr().out


def _export(embedder, instruction, out_dir, **options):
    raise AssertionError("pe only registers an exporter; exporting is the plugin's")


def _load(folder, **options):
    raise AssertionError("pe only registers an exporter; loading is the plugin's")


def test_hook_pe_register_exporters(fresh_plugins):
    """The hook fills pe's exporter registry once; pe refuses a second exporter of one
    name and names what is installed when one is missing."""
    calls = []

    def register(registry):
        calls.append(registry)
        registry.register("toy", _export, _load)

    manager = fresh_plugins.get_plugin_manager()
    manager.register(make_plugin(pe_register_exporters=register), name="toy-exporter")
    exporters = manager.exporters()
    assert manager.exporters() is exporters and calls == [exporters]  # built once
    toy = exporters.get("toy")
    assert (toy.name, toy.export, toy.load) == ("toy", _export, _load)
    with pytest.raises(pe_core.PEError, match="exporter 'toy' is registered twice"):
        exporters.register("toy", _export, _load)
    with pytest.raises(pe_core.PEError, match=r"no exporter 'tflite' is installed \(.*toy"):
        exporters.get("tflite")


def _publish(folder, name):
    raise AssertionError("pe only registers a publisher; storing is the plugin's")


def test_hook_pe_register_publishers(fresh_plugins):
    """A publisher is registered by its own hook, apart from the resolvers; pe refuses a
    second publisher of one name and a missing one is None (pe demo then skips its push)."""
    manager = fresh_plugins.get_plugin_manager()
    manager.register(
        make_plugin(pe_register_publishers=lambda registry: registry.register("toy", _publish)),
        name="toy-publisher",
    )
    publishers = manager.publishers()
    assert publishers.get("toy").publish is _publish
    assert "toy" not in [r.name for r in manager.resolvers()]
    with pytest.raises(pe_core.PEError, match="publisher 'toy' is registered twice"):
        publishers.register("toy", _publish)
    assert publishers.get("elsewhere") is None


def test_demo_skips_the_push_without_a_publisher(fresh_plugins, monkeypatch, tmp_path, capsys):
    from pe_core import demo

    monkeypatch.setenv("PE_LOAD_PLUGINS", "llama")
    fresh_plugins.reset_plugin_manager()
    demo._publish(tmp_path, [])
    assert "no local registry installed (pip install pe-registry)" in capsys.readouterr().out
