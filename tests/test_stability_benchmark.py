"""benchmarks/stability.py's reading of a run: best, final (the saved model's), the
collapse verdict, and the order the grid runs in."""

from __future__ import annotations

import argparse
import json

import pytest


@pytest.fixture
def stability(monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks import stability

    return stability


def _log(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_run_the_guard_restored_reads_its_saved_score(stability, tmp_path):
    log = _log(tmp_path / "log.jsonl", [
        {"step": 0, "dev_score": 0.30, "train_time_s": 0.0},
        {"step": 1, "loss": 2.5, "train_time_s": 1.0},
        {"step": 10, "dev_score": 0.50, "train_time_s": 10.0},
        {"step": 12, "rollback": {"step": 12, "reason": "dev drop"}},
        {"step": 20, "dev_score": 0.10, "train_time_s": 20.0},
        {"step": 20, "restored_best": {"restored_step": 10}, "dev_score": 0.50,
         "train_time_s": 20.0},
    ])
    got = stability.read_run(log, frozen=0.2)
    assert (got["best"], got["final"], got["final_raw"]) == (0.5, 0.5, 0.1)
    assert got["restored_best"] and got["rollbacks"] == 1 and not got["collapsed"]
    assert got["curve"] == [(0, 0.0, 0.3), (10, 10.0, 0.5), (20, 20.0, 0.1)]


@pytest.mark.parametrize(("final", "best", "frozen", "verdict"), [
    (0.50, 0.55, 0.30, False),
    (0.40, 0.55, 0.10, True),   # below 0.8x the best
    (0.33, 0.34, 0.30, True),   # within 0.05 of the frozen backbone
    (0.20, 0.20, 0.35, True),   # below the frozen backbone
])
def test_collapse_verdict(stability, final, best, frozen, verdict):
    assert stability.collapsed(final, best, frozen) is verdict


def test_cheapest_most_collapse_prone_cells_first(stability):
    args = argparse.Namespace(
        backbones=["gemma:pe-real:gemma3-270m", "llama:pe-real:smollm2-135m"],
        promptings=["pe-real:smollm2-135m", "pe-default:prompting"], seeds=[0, 1])
    order = [(b.split(":")[-1], p.split(":")[-1], s) for b, p, s in stability.cells(args)]
    assert order[:3] == [("smollm2-135m", "prompting", 0), ("smollm2-135m", "prompting", 1),
                         ("gemma3-270m", "prompting", 0)]
    assert len(order) == 8


def test_markdown_counts_collapses(stability):
    cell = {"variant": "default", "backbone": "smollm2-135m", "prompting": "prompting",
            "seed": 0, "best": 0.5, "final": 0.5, "final_raw": 0.1, "frozen": 0.35,
            "collapsed": False, "rollbacks": 1, "restored_best": True, "train_s": 100.0,
            "curve": [(0, 0.0, 0.3)]}
    text = stability.markdown({"size": "40x8x64", "cells": [cell, {**cell, "seed": 1,
                               "collapsed": True}], "frozen": {"smollm2-135m":
                                                              {"last": 0.1, "mean": 0.35}}}, {})
    assert "0.5000 (last 0.1000)" in text
    assert "| default | smollm2-135m | prompting | 2 | 1 | 0.5000 |" in text
    assert stability.plot_marks({"frozen": {"x": {"last": 0.1, "mean": 0.2}}}) == {"frozen x": 0.2}


def test_a_failed_cell_runs_again_and_a_finished_one_does_not(stability, tmp_path,
                                                               monkeypatch):
    """A run killed mid-way (the OOM killer: exit -9, no traceback) is kept with its exit
    code, and the next invocation trains it again instead of reporting the failure."""
    import subprocess

    args = argparse.Namespace(backbones=["llama:pe-real:smollm2-135m"],
                              promptings=["pe-default:prompting"], seeds=[0, 1], work=tmp_path,
                              dev=4, steps=2, batch_size=8, max_length=64, eval_every=1,
                              variant="default", extra="", threads=1)
    monkeypatch.setattr(stability, "_data", lambda work, n: (tmp_path / "t", tmp_path / "d"))
    monkeypatch.setattr(stability, "frozen_score", lambda *a: 0.1)
    monkeypatch.setattr(stability, "read_run", lambda log, frozen: {"final": 0.5})
    seen = []

    real_run = subprocess.run

    def run(command, **kw):
        if "pe_core.cli" not in command:  # git, for the record's commit
            return real_run(command, **kw)
        seen.append(command[command.index("--seed") + 1])
        return subprocess.CompletedProcess(command, -9 if len(seen) == 1 else 0, "", "")

    monkeypatch.setattr(subprocess, "run", run)
    results = {"cells": {}, "frozen": {}}
    stability.run_grid(args, results, tmp_path / "cells.json")
    first, second = (results["cells"][k] for k in sorted(results["cells"]))
    assert first["error"] == ["exit -9"] and second["final"] == 0.5
    stability.run_grid(args, results, tmp_path / "cells.json")
    assert seen == ["0", "1", "0"]  # seed 0 again, seed 1 not
    assert all("error" not in c for c in results["cells"].values())
