"""Bad input to publishing (``pe_registry.push``, ``pe push``): a typed :class:`PEError`
that says what to do (exit code 2 and one line from the CLI), and the registry
byte-identical afterwards; a push killed half way leaves nothing the next push keeps."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from registry_testing import snapshot, write_alignment, write_run

import pe_registry
from pe_core.errors import ArgumentTypeError, PEError, RegistryError
from pe_core.model.config import EmbedderConfig


def _for_backbone(folder: Path, backbone: str) -> Path:
    cfg = EmbedderConfig.load(folder)
    replace(cfg, backbone=backbone).save(folder)
    return folder


def test_push_of_another_backbone_under_a_name_is_refused(tmp_path, registry):
    registry.push(write_alignment(tmp_path / "llama"), "shared")
    before = snapshot(registry.root)
    gemma = _for_backbone(write_alignment(tmp_path / "gemma", seed=1), "gemma")
    with pytest.raises(RegistryError, match="backbone 'llama'.*another name") as info:
        registry.push(gemma, "shared")
    assert "pe remove shared" in str(info.value)
    # a run: its Prompting LLM is not published either (both or neither)
    run = _for_backbone(write_run(tmp_path / "gemma-run", seed=2), "gemma")
    with pytest.raises(RegistryError, match="another name"):
        pe_registry.push(run, "shared")
    assert snapshot(registry.root) == before
    assert registry.versions("shared") == ["1"] and registry.versions("shared-prompting") == []
    # the same backbone still gets a new version, another name takes the other backbone
    assert registry.push(write_alignment(tmp_path / "llama2", seed=3), "shared").ref == "shared@2"
    assert registry.push(gemma, "shared-gemma").ref == "shared-gemma@1"


def test_cli_push_of_another_backbone_exits_2_with_one_line(tmp_path, registry, capsys):
    from pe_core.cli.main import main

    assert main(["push", str(write_alignment(tmp_path / "llama")), "shared"]) == 0
    before = snapshot(registry.root)
    capsys.readouterr()
    gemma = _for_backbone(write_alignment(tmp_path / "gemma", seed=1), "gemma")
    assert main(["push", str(gemma), "shared"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pe: error: ") and "another name" in err[0]
    assert snapshot(registry.root) == before


KILLED_PUSH = """
import os, sys
from pe_registry import local
from pe_registry.local import LocalRegistry

real = local.stage_for_publishing

def staged_then_killed(*args, **kwargs):
    real(*args, **kwargs)  # the staging folder is full now
    os.kill(os.getpid(), 9)

local.stage_for_publishing = staged_then_killed
LocalRegistry(sys.argv[1]).push(sys.argv[2], "killed")
"""


def test_staging_of_a_killed_push_is_swept_by_the_next_push(tmp_path, registry):
    src = write_run(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", KILLED_PUSH, str(registry.root), str(src)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    left = [p.name for p in registry.staging_dir.iterdir()]
    assert len(left) == 1 and left[0].startswith("push-")  # fresh: a day-old rule keeps it
    assert registry.versions("killed") == []
    entry = registry.push(write_alignment(tmp_path / "next"), "next")
    assert entry.ref == "next@1"
    assert not any(registry.staging_dir.iterdir())
    assert [e.ref for e in registry.entries()] == ["next@1"]


def test_push_while_another_push_holds_the_lock_keeps_its_staging(tmp_path, registry):
    """Only push-* folders are swept, and only under the lock: another kind of work
    folder (a pull in progress) is left alone."""
    registry.staging_dir.mkdir(parents=True)
    pulling = registry.staging_dir / "pull-inprogress"
    pulling.mkdir()
    (pulling / "part").write_bytes(b"x")
    registry.push(write_alignment(tmp_path / "a"), "a")
    assert (pulling / "part").read_bytes() == b"x"


BAD_PUSHES = [
    ("source-None", lambda src: ((None,), {}), ArgumentTypeError),
    ("source-int", lambda src: ((5,), {}), ArgumentTypeError),
    ("source-empty", lambda src: (("",), {}), ArgumentTypeError),
    ("to-int", lambda src: ((src, 5), {}), ArgumentTypeError),
    ("to-list", lambda src: ((src, ["x"]), {}), ArgumentTypeError),
    ("to-space", lambda src: ((src, "has space"), {}), RegistryError),
    ("to-empty-version", lambda src: ((src, "x@"), {}), RegistryError),
    ("to-hub-with-version", lambda src: ((src, "org/x@v1"), {}), RegistryError),
    ("private-str", lambda src: ((src, "org/x"), {"private": "yes"}), ArgumentTypeError),
    ("token-int", lambda src: ((src, "org/x"), {"token": 5}), ArgumentTypeError),
    ("message-int", lambda src: ((src,), {"message": 3}), ArgumentTypeError),
    ("missing-source", lambda src: ((src.parent / "nope",), {}), PEError),
]


@pytest.mark.parametrize(("build", "error"), [c[1:] for c in BAD_PUSHES],
                         ids=[c[0] for c in BAD_PUSHES])
def test_bad_push_arguments_are_typed_errors_and_change_nothing(tmp_path, registry, build,
                                                                error):
    registry.push(write_alignment(tmp_path / "llama"), "llama")
    src = write_alignment(tmp_path / "src", seed=1)
    before = snapshot(registry.root)
    args, kwargs = build(src)
    with pytest.raises(error) as info:
        pe_registry.push(*args, **kwargs)
    assert isinstance(info.value, PEError)
    assert any(w in str(info.value) for w in ("must be", "name", "not", "without")), info.value
    assert snapshot(registry.root) == before
    assert not [p for p in registry.staging_dir.iterdir() if p.name.startswith("push-")]


@pytest.mark.parametrize("call", [
    lambda reg: reg.push(Path(os.devnull).parent, 5),
    lambda reg: reg.push(Path(os.devnull).parent, "ok", 3),
    lambda reg: reg.get(None),
    lambda reg: reg.remove(7),
    lambda reg: pe_registry.pull(None),
    lambda reg: pe_registry.remove(["llama@1"]),
], ids=["name-int", "version-int", "get-None", "remove-int", "pull-None", "remove-list"])
def test_registry_methods_check_their_arguments(tmp_path, registry, call):
    registry.push(write_alignment(tmp_path / "llama"), "llama")
    before = snapshot(registry.root)
    with pytest.raises(PEError):
        call(registry)
    assert snapshot(registry.root) == before
    assert registry.versions("llama") == ["1"]
