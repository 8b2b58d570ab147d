"""An outside plugin for a family pe does not ship (Phi-3), built as its own
distribution, installed into a temporary site directory, discovered through its entry
point, and run through the public conformance suite: the public API is enough."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "pe-plugin-phi3"
version = "0.0.1"
dependencies = ["pe-core"]

[project.entry-points.pe_core]
phi3 = "pe_plugin_phi3"

[tool.setuptools]
packages = ["pe_plugin_phi3"]
"""

MODULE = '''
from pe_core import hookimpl
from pe_core.plugins.backbones import BackboneSpec


@hookimpl
def pe_register_backbones(registry):
    registry.register(BackboneSpec(
        name="phi3",
        model_types=("phi3",),
        default_model="microsoft/Phi-3-mini-4k-instruct",
        tiny_configs={"phi3": dict(hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=256)},
    ))
'''

CONFORMANCE = '''
from pe_core.testing.conformance import BackboneConformance


class TestPhi3(BackboneConformance):
    backbone = "phi3"
'''


@pytest.mark.slow  # pip installs a package, then runs pe in subprocesses
def test_third_party_plugin_installs_discovers_and_conforms(tmp_path):
    src = tmp_path / "pe-plugin-phi3"
    (src / "pe_plugin_phi3").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "pe_plugin_phi3" / "__init__.py").write_text(textwrap.dedent(MODULE))
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(site), str(src)],
        check=True, capture_output=True, text=True,
    )
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}

    listed = subprocess.run(
        [sys.executable, "-m", "pe_core", "plugins"], env=env, check=True,
        capture_output=True, text=True,
    )
    rows = {r["plugin"]: r for r in json.loads(listed.stdout)}
    assert rows["phi3"]["distribution"] == "pe-plugin-phi3"
    assert rows["phi3"]["backbones"] == ["phi3"] and rows["phi3"]["error"] is None

    test_file = tmp_path / "test_phi3_conformance.py"
    test_file.write_text(CONFORMANCE)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
