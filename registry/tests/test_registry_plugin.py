"""The pe-core plugin: entry point, both hooks, and how pe-core uses the resolvers."""

from __future__ import annotations

import argparse
import contextlib
import io
from importlib import metadata
from pathlib import Path

import pytest
from registry_testing import write_alignment

import pe_registry
from pe_core.plugins import get_plugin_manager, reset_plugin_manager


@pytest.fixture
def manager(monkeypatch):
    monkeypatch.setenv("PE_LOAD_PLUGINS", "registry")
    reset_plugin_manager()
    yield get_plugin_manager()
    reset_plugin_manager()


def test_entry_point_is_declared():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="pe_core")}
    assert eps.get("registry") == "pe_registry.plugin"


def test_hook_pe_register_resolvers(tmp_path, manager, registry):
    resolvers = list(manager.resolvers())
    # pe-core's shipped zoo is tried after every plugin's
    assert [r.name for r in resolvers] == ["folder", "registry", "hub", "zoo"]
    assert all(r.find is not None for r in resolvers[1:])
    entry = registry.push(write_alignment(tmp_path / "llama"))
    # pe-core's own lookups go through them
    from pe_core.loading import find_alignment, resolve_alignment

    assert resolve_alignment("llama@1") == entry.path
    assert resolve_alignment("llama") == entry.path
    assert find_alignment("org/p", "org/tiny") == entry.path
    assert find_alignment("org/p", "org/unknown") is None  # local miss; Hub unreachable


def test_hook_pe_register_commands(tmp_path, manager, capsys):
    parser = argparse.ArgumentParser(prog="pe")
    sub = parser.add_subparsers(dest="command")
    manager.hook.pe_register_commands(cli=sub)
    for argv in (["push", "src"], ["pull", "a/b"], ["list"], ["remove", "x"]):
        assert callable(parser.parse_args(argv).func)
    src = write_alignment(tmp_path / "llama")
    args = parser.parse_args(["push", str(src), "--json"])
    assert args.func(args) == 0
    assert '"ref": "llama@1"' in capsys.readouterr().out


def test_pe_cli_runs_registry_commands(tmp_path, manager):
    main = pytest.importorskip("pe_core.cli.main").main
    src = write_alignment(tmp_path / "llama")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["push", str(src), "llama"]) == 0
        assert main(["list", "--json"]) == 0
    assert "pushed llama@1" in out.getvalue() and '"d_B": 16' in out.getvalue()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["pull", "llama@7"]) == 2
    assert "not in the registry" in err.getvalue()


def test_pe_core_never_imports_pe_registry():
    import ast

    import pe_core

    def imports_registry(file: Path) -> bool:
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "pe_registry" for n in names):
                return True
        return False

    root = Path(pe_core.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if imports_registry(p)]
    assert offenders == []


def test_checking_artifacts_never_imports_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, pe_registry.artifact; "
        "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_public_api_is_exported():
    for name in ("find", "list_artifacts", "list_hub", "pull", "push", "remove", "resolve"):
        assert name in pe_registry.__all__
        assert callable(getattr(pe_registry, name))


def test_push_local_and_repo_flags(tmp_path, manager, hub):
    """The spellings the README shows: ``--local [NAME]`` and ``--repo ORG/NAME``."""
    from pe_core.cli.main import main

    src = write_alignment(tmp_path / "gemma")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["push", str(src), "--local"]) == 0
        assert main(["push", str(src), "--local", "named"]) == 0
        assert main(["push", str(src), "--repo", "my-org/pe-align-gemma"]) == 0
    text = out.getvalue()
    assert "pushed gemma@1" in text and "pushed named@1" in text
    assert "pushed my-org/pe-align-gemma@" in text
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["push", str(src), "--repo", "no-org"]) == 2
        assert main(["push", str(src), "x", "--local", "y"]) == 2
    assert "org/name" in err.getvalue() and "once" in err.getvalue()


def test_publisher_and_exporter_are_pe_registry_s(tmp_path, manager, registry):
    """pe-registry publishes through its own hook (not as a resolver) into the local
    registry, and its exporter is the ONNX one."""
    from pe_registry import plugin

    assert manager.exporters().get("onnx").export is plugin.export_onnx
    store = manager.publishers().get("registry")
    entry = store.publish(write_alignment(tmp_path / "llama"), "demo-llama")
    assert entry.ref == "demo-llama@1" and entry.path == registry.get("demo-llama").path
    assert all(not hasattr(r, "publish") for r in manager.resolvers())
