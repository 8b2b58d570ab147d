"""The readings the benchmark scripts take from run logs: dev curves, time to a target
score, the score after a given training time, and the transfer table's ratios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def _log(path: Path, evals: list[tuple[int, float, float]], step_s: float) -> Path:
    """A log.jsonl as the trainer writes it: a step record per step, an evaluation
    record at each of ``evals`` (step, training seconds, dev score)."""
    lines, elapsed = [], 0.0
    last = max(st for st, _, _ in evals)
    scores = {st: (t, v) for st, t, v in evals}
    if 0 in scores:
        lines.append({"step": 0, "dev_score": scores[0][1], "train_time_s": 0.0})
    for step in range(1, last + 1):
        elapsed += step_s
        lines.append({"step": step, "loss": 1.0, "step_time_s": step_s,
                      "train_time_s": elapsed})
        if step in scores:
            lines.append({"step": step, "dev_score": scores[step][1],
                          "train_time_s": scores[step][0]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_curve_readings(tmp_path):
    from benchmarks.curves import first_reach, read_curve, score_at

    log = _log(tmp_path / "run" / "log.jsonl",
               [(0, 0.0, 0.10), (2, 1.0, 0.30), (4, 2.0, 0.50), (6, 3.0, 0.40)], 0.5)
    run = read_curve(log, last=2)
    assert run["curve"] == [(0, 0.0, 0.1), (2, 1.0, 0.3), (4, 2.0, 0.5), (6, 3.0, 0.4)]
    assert run["steps"] == 6
    assert run["final"] == pytest.approx(0.45, abs=1e-12)
    assert run["total_s"] == pytest.approx(3.0, abs=1e-12)
    assert run["ms_per_step"] == pytest.approx(500.0, abs=1e-9)
    assert first_reach(run["curve"], 0.45) == (4, 2.0)
    assert first_reach(run["curve"], 0.9) is None
    # what the run had to show after 1.9 s: the evaluation at 1.0 s, not the one at 2.0 s
    assert score_at(run["curve"], 1.9) == 0.3
    assert score_at(run["curve"], 2.0) == 0.5
    assert score_at([], 5.0) is None


def test_tier_refs():
    from benchmarks.tiers import TIERS, parse_ref, short

    assert parse_ref("gemma:pe-real:gemma3-270m") == ("gemma", "pe-real:gemma3-270m")
    assert parse_ref("qwen") == ("qwen", None)
    assert short("llama:pe-real:smollm2-135m") == "smollm2-135m"
    assert short("llama:org/name@rev") == "name"
    assert [short(r) for r in TIERS["real"].backbones] == ["smollm2-135m", "gemma3-270m"]
    assert TIERS["toy"].transfer == ("llama:pe-default:llama", "qwen:pe-default:qwen")


def test_transfer_reads_time_to_scratchs_final(tmp_path):
    """The deciding reading: time to 95 % of scratch's final; a run that never gets
    there is a lower bound; align above the bar at step 0 is said so."""
    from benchmarks.transfer import ALIGN, LORA, SCRATCH, render, summarise

    runs = {
        ALIGN: _log(tmp_path / "align" / "log.jsonl",
                    [(0, 0.0, 0.20), (10, 1.0, 0.40), (20, 2.0, 0.42)], 0.1).parent,
        SCRATCH: _log(tmp_path / "scratch" / "log.jsonl",
                      [(0, 0.0, 0.05), (10, 4.0, 0.30), (20, 8.0, 0.40)], 0.4).parent,
        LORA: _log(tmp_path / "lora" / "log.jsonl",
                   [(0, 0.0, 0.01), (10, 20.0, 0.10), (20, 40.0, 0.20)], 2.0).parent,
    }
    summary = summarise(runs, 0.95, last=1)
    assert summary["targets"]["scratch"] == pytest.approx(0.38, abs=1e-12)
    got = summary["runs"]
    assert got[ALIGN]["reach"]["scratch"] == (10, 1.0)
    assert got[SCRATCH]["reach"]["scratch"] == (20, 8.0)
    assert got[LORA]["reach"]["scratch"] is None
    table = render(summary, 0.95, 1, "title")
    scratch_row = next(x for x in table.splitlines() if x.startswith(f"| {SCRATCH}"))
    lora_row = next(x for x in table.splitlines() if x.startswith(f"| {LORA}"))
    assert "| 8.0 s (step 20) | 8.0x |" in scratch_row
    assert "never in 40 s | > 40.0x (never) |" in lora_row
    low = summarise(runs, 0.5, last=1)  # align starts at 0.20 >= 0.5 * 0.40
    assert "align starts above it" in render(low, 0.5, 1, "title")


def test_quality_keeps_the_alignment_lr_best_on_dev(tmp_path):
    import argparse

    from benchmarks.curves import read_curve
    from benchmarks.quality import Bench

    bench = Bench.__new__(Bench)  # the sweep alone: no corpus, no model
    bench.args = argparse.Namespace(alignment_lr=[1e-2, 3e-2])
    bench.work, bench.sweeps, bench.curves, bench.chosen = tmp_path, {}, {}, {}
    finals = {1e-2: 0.30, 3e-2: 0.55}
    made = []

    def run_one(name, lr):
        made.append((name, lr))
        log = _log(tmp_path / name / "log.jsonl", [(0, 0.0, 0.1), (10, 5.0, finals[lr])], 0.5)
        return f"model {lr:g}", read_curve(log, last=1)

    key = ("PromptEmbedder suffix (last)", "gemma3-270m", "prompting")
    model, curve = bench.sweep_alignment_lr("PE on gemma3-270m", key, "pe-suffix", run_one)
    assert made == [("pe-suffix-alr0.01", 1e-2), ("pe-suffix-alr0.03", 3e-2)]
    assert (model, curve["final"]) == ("model 0.03", 0.55)
    assert bench.chosen[key] == (3e-2, "pe-suffix-alr0.03")  # transfer aligns from this run
    assert bench.sweeps == {"PE on gemma3-270m, alignment lr": {"0.01": 0.30, "0.03": 0.55}}
    assert list(bench.curves["gemma3-270m"]) == [f"{key[0]} [prompting] alr 0.01"]

    # one lr (or none: the library's default) is a plain run under the plain folder name
    made.clear()
    bench.sweep_alignment_lr("PE", key, "pe-one", run_one, lrs=[1e-2])
    assert made == [("pe-one", 1e-2)] and bench.chosen[key] == (1e-2, "pe-one")


def test_quality_checks_the_task_sources_before_any_training(tmp_path, monkeypatch):
    """Without gensim's files, quality.py stops at once with the pip command to run."""
    from benchmarks.quality import check_task_data
    from pe_core.data import packaged
    from pe_core.errors import MissingFileError

    monkeypatch.setenv("PE_SOURCES", str(tmp_path))  # no archive there
    monkeypatch.setattr(packaged, "_from_installed", lambda data: None)  # nor installed
    check_task_data(["PELocalDocstringRetrieval"])  # pe's own corpus: nothing to download
    with pytest.raises(MissingFileError, match=r"pip download --no-deps gensim==4\.4\.0"):
        check_task_data(["PELocalDocstringRetrieval", "PELeeSTS"])
