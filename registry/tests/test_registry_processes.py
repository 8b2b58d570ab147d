"""Real processes: concurrent pushes, and the CLI with offline settings given at start-up
(the way huggingface_hub reads them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from registry_testing import closed_port_url, run_cli, write_alignment

import pe_registry
from pe_registry.local import LocalRegistry
from pe_registry.manifest import verify

PUSH_MANY = """
import sys
from pe_registry import push
for src in sys.argv[1:]:
    print(push(src, "shared").ref, flush=True)
"""


def test_two_processes_pushing_at_once(tmp_path, registry):
    # each process pushes 4 different artifacts under one name, at the same time
    runs = [
        [str(write_alignment(tmp_path / f"p{p}-{i}", seed=10 * p + i)) for i in range(4)]
        for p in range(2)
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PUSH_MANY, *srcs],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )
        for srcs in runs
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    refs = [line for out, _ in outputs for line in out.split()]
    assert sorted(refs, key=lambda r: int(r.split("@")[1])) == [f"shared@{i}" for i in range(1, 9)]
    # consistent afterwards: 8 complete versions, all different, nothing left in staging
    reg = LocalRegistry(registry.root)
    assert reg.versions("shared") == [str(i) for i in range(1, 9)]
    digests = {verify(reg.get(f"shared@{i}").path).digest() for i in range(1, 9)}
    assert len(digests) == 8
    assert not any(reg.staging_dir.iterdir())


def test_cli_offline_from_start_up(tmp_path, hub, registry):
    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    folder = pe_registry.pull("org/pe-llama")
    env = {"HF_HUB_OFFLINE": "1"}
    ok = run_cli("pull", "org/pe-llama", "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["path"] == str(folder)
    started = time.perf_counter()
    bad = run_cli("pull", "org/never-pulled", env=env)
    assert bad.returncode == 2
    assert "offline" in bad.stderr and "never pulled" in bad.stderr
    assert time.perf_counter() - started < 10  # interpreter start-up included; no retry loop


def test_cli_dead_endpoint_from_start_up(tmp_path, hub, registry):
    pe_registry.push(write_alignment(tmp_path / "llama"), "org/pe-llama")
    folder = pe_registry.pull("org/pe-llama")
    env = {"HF_ENDPOINT": closed_port_url()}
    ok = run_cli("pull", "org/pe-llama", env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(folder)
    started = time.perf_counter()
    bad = run_cli("pull", "org/never-pulled", env=env)
    assert bad.returncode == 2 and "cannot be reached" in bad.stderr
    assert time.perf_counter() - started < 10


def test_cli_push_list_remove(tmp_path, registry):
    src = write_alignment(tmp_path / "llama", eval_results={"t": {"main_score": 0.5}})
    out = run_cli("push", str(src), "llama")
    assert out.returncode == 0 and out.stdout.strip() == "pushed llama@1"
    listing = run_cli("list")
    header, row = listing.stdout.splitlines()
    assert header.split() == [
        "name",
        "kind",
        "backbone",
        "model",
        "d_P→d_B",
        "K",
        "score",
        "created",
    ]
    assert row.split()[:7] == ["llama@1", "alignment", "llama", "org/tiny", "8→16", "5", "0.5000"]
    bad = run_cli("push", str(write_alignment(tmp_path / "bad", config_dims=(8, 32))), "llama")
    assert bad.returncode == 2 and "d_P x d_B" in bad.stderr
    assert run_cli("remove", "llama").stdout.strip() == "removed llama@1"
    assert run_cli("list").stdout.strip() == "(nothing)"
