"""Benchmark results carry their provenance: every file under ``benchmarks/results/`` is
one harness record (command, commit, machine, args, results), and the docs' tables and
plots are rendered from those records alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("**/*.json"))


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def test_results_are_records_in_their_benchmarks_folder():
    assert FILES, "no benchmark records found"
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            rel = path.relative_to(RESULTS)
            assert path.suffix == ".json" and len(rel.parts) == 2, (
                f"{rel}: results are benchmarks/results/<benchmark>/<run>.json; tables and "
                "plots are rendered by python -m benchmarks.render")


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_result_has_the_record_fields(path):
    from benchmarks.harness import RECORD_FIELDS

    rec = json.loads(path.read_text())
    assert isinstance(rec, dict)
    missing = [f for f in RECORD_FIELDS if f not in rec]
    assert not missing, f"{path.name} lacks {missing}"
    assert re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"] or ""), rec["git_commit"]
    assert isinstance(rec["machine"], dict) and "cpu_model" in rec["machine"]
    assert isinstance(rec["args"], dict) and rec["args"]
    assert rec["results"] not in (None, {}, [])
    # a hand-assembled result had placeholders such as <quality.py train.jsonl>
    assert not re.search(r"<[^>]*>", rec["command"]), rec["command"]
    script = path.parent.name
    assert rec["command"].startswith((f"python benchmarks/{script}.py",
                                      f"python -m benchmarks.{script}")), rec["command"]
    if rec.get("provenance") != "migrated":
        assert rec["command"].startswith(f"python -m benchmarks.{script}")
        assert rec["started"] and rec["seconds"] is not None


def test_every_recorded_commit_exists():
    """The commit a record names is in this repository's history (a shallow or absent
    clone cannot tell, so the check needs the full history)."""
    git = ROOT / ".git"
    if not git.exists() or (git / "shallow").exists():
        pytest.skip("needs the repository's full git history")
    commits = sorted({json.loads(p.read_text())["git_commit"] for p in FILES})
    out = subprocess.run(["git", "cat-file", "--batch-check"], cwd=ROOT, text=True,
                         input="\n".join(commits) + "\n", capture_output=True, check=True)
    assert "missing" not in out.stdout, out.stdout


def test_render_writes_a_page_per_benchmark_with_every_run(tmp_path):
    from benchmarks.render import render_all

    out = tmp_path / "site"
    pages = render_all(RESULTS, out, plots=False)
    benches = sorted({p.parent.name for p in FILES})
    assert [p.stem for p in pages] == benches
    index = (out / "index.md").read_text()
    for bench in benches:
        assert f"]({bench}.md)" in index
    for path in FILES:
        page = (out / f"{path.parent.name}.md").read_text()
        rec = json.loads(path.read_text())
        assert f"## {path.stem}\n" in page
        assert rec["command"] in page
        assert rec["git_commit"][:12] in page
    table = (out / "transfer.md").read_text()
    assert "95 % of scratch's final" in table  # the script's own table, through its hook


def _record(tmp_path: Path, argv: list[str]) -> dict:
    from benchmarks import harness

    p = harness.parser("toy", threads=1)
    p.add_argument("--steps", type=int, default=100)
    args = harness.parse(p, argv, quick={"steps": 2, "threads": 3})
    return harness.run("toy", args, lambda a: {"steps": a.steps,
                                               "curve": [[0, 0.0, 0.1], [2, 1.5, 0.4]]}, argv)


def test_harness_writes_one_record_with_provenance(tmp_path):
    from benchmarks.harness import RECORD_FIELDS

    out = tmp_path / "r" / "toy.json"
    rec = _record(tmp_path, ["--json", str(out), "--quick", "--threads", "1"])
    assert json.loads(out.read_text()) == rec
    assert all(f in rec for f in RECORD_FIELDS)
    assert rec["command"] == f"python -m benchmarks.toy --json {out} --quick --threads 1"
    # --quick changes what the user left at its default, not what was given
    assert rec["args"]["steps"] == 2 and rec["args"]["threads"] == 1
    assert rec["results"]["steps"] == 2
    assert rec["machine"]["threads"] == 1 and rec["machine"]["cores"]
    assert all(f.startswith(("avx", "amx")) for f in rec["machine"]["flags"])
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", rec["git_commit"])
        assert isinstance(rec["dirty"], bool)
    else:  # an unpacked source tree: no commit to name, said so rather than guessed
        assert rec["git_commit"] is None and rec["dirty"] is None


def test_render_draws_curves_and_refuses_what_is_not_a_record(tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.harness import NotARecord
    from benchmarks.render import render_all

    results = tmp_path / "results"
    _record(tmp_path, ["--json", str(results / "toy" / "run1.json")])
    out = tmp_path / "site"
    render_all(results, out)
    assert (out / "img" / "toy" / "run1.png").read_bytes()[:4] == b"\x89PNG"
    assert "![run1](img/toy/run1.png)" in (out / "toy.md").read_text()

    # a dropped record takes its page and plot with it
    (results / "toy" / "run1.json").rename(tmp_path / "run1.json")
    (results / "other").mkdir()
    (tmp_path / "run1.json").rename(results / "other" / "run2.json")
    render_all(results, out)
    assert not (out / "toy.md").exists() and not (out / "img" / "toy").exists()
    assert (out / "other.md").exists()

    (results / "other" / "handmade.json").write_text(json.dumps({"rows": [1, 2]}))
    with pytest.raises(NotARecord, match="handmade.json"):
        render_all(results, out)
    proc = subprocess.run([sys.executable, "-m", "benchmarks.render", "--results",
                           str(results), "--out", str(out), "--no-plots"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"render: {results / 'other' / 'handmade.json'}: not a benchmark record (no command, "
        "git_commit, dirty, machine, started, seconds, args, results); write results "
        "through benchmarks.harness.run"]


def test_a_scripts_own_figure_is_drawn(tmp_path):
    """quality's bar chart comes from its figure(results, args) hook, beside its curves."""
    pytest.importorskip("matplotlib")
    from benchmarks.render import render_all

    src = RESULTS / "quality" / "quality-real-small-smolprompt.json"
    (tmp_path / "results" / "quality").mkdir(parents=True)
    (tmp_path / "results" / "quality" / src.name).write_bytes(src.read_bytes())
    render_all(tmp_path / "results", tmp_path / "site")
    page = (tmp_path / "site" / "quality.md").read_text()
    for png in ("quality-real-small-smolprompt.png", "quality-real-small-smolprompt-figure.png"):
        assert f"(img/quality/{png})" in page
        assert (tmp_path / "site" / "img" / "quality" / png).read_bytes()[:4] == b"\x89PNG"
