"""Does ``pe train`` converge on the real backbones on every seed? (issue 37)

For each backbone x Prompting LLM x seed it runs ``pe train`` as a user would (a
subprocess, the CLI's defaults except the size flags below and ``--extra``), reads the
run's dev curve and says whether it collapsed:

* **collapsed** when the final dev nDCG@10 is below 0.8x the run's best, or within 0.05
  of the frozen backbone read without a prompt (the better of last-token and mean
  pooling, on the same dev pairs).

The final score is the one of the model the run saved (with the divergence guard on, a
run that ended below 0.8x its best saves its best state: ``final_raw`` keeps the last
evaluation before that). Resumable: every finished cell goes at once into
``WORK/cells.json``, and a cell already there is not trained again, so the grid can be
run in pieces over days; each invocation's record (``benchmarks.harness``) holds every
cell of the grid it was asked for that is finished.

    python -m benchmarks.stability --threads 1                         # the full grid
    python -m benchmarks.stability --backbones llama:pe-real:smollm2-135m \\
        --promptings pe-default:prompting --seeds 0 1 --steps 40       # a corner of it
    python -m benchmarks.stability --extra=--no-divergence-guard --variant guard-off
    python -m benchmarks.stability --report                            # nothing trained

Size: batch 8 x 64-token texts, 80 steps, dev score every 20 steps on 64 dev pairs of the
local corpus, training on the corpus's train split (40 steps, the earlier lever runs'
size, left SmolLM2-135M runs still rising below the frozen backbone's mean pooling: see
docs/benchmarks/stability.md). Each cell keeps the ``pe train`` command, git commit and
machine that ran it; ``python -m benchmarks.render`` draws the per-seed table and the dev
curves per backbone x Prompting LLM. Not a test: a cell is 80 real-backbone steps plus 5
dev evaluations (3-10 minutes on one CPU core).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.tiers import REAL_PROMPTING, TIERS, TOY_PROMPTING, parse_ref, short

DROP = 0.8  # final < DROP x best: collapsed
NEAR_FROZEN = 0.05  # final within this of the frozen backbone: collapsed


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__, threads=1,
                       threads_help="threads of each pe train run (OMP_NUM_THREADS; default "
                                    "1: on a shared machine more threads only contend)")
    p.add_argument("--backbones", nargs="+", default=list(TIERS["real"].backbones),
                   help="family:model refs (default: the real tier's)")
    p.add_argument("--promptings", nargs="+", default=[TOY_PROMPTING, REAL_PROMPTING],
                   help="Prompting LLMs (default: the toy one and SmolLM2-135M-Instruct)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--dev", type=int, default=64, help="dev pairs scored")
    p.add_argument("--extra", default="", help="more pe train flags, one string")
    p.add_argument("--variant", default="default",
                   help="the name these cells are kept under (use one per --extra)")
    p.add_argument("--work", default="runs/stability",
                   help="run folders and cells.json, the finished cells")
    p.add_argument("--report", action="store_true",
                   help="train nothing: record the finished cells of the grid")
    args = harness.parse(p, argv, quick={
        "backbones": ["llama:pe-default:llama"], "promptings": [TOY_PROMPTING], "seeds": [0],
        "steps": 4, "eval_every": 2, "dev": 16})
    harness.run("stability", args, measure, argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    state_path = Path(args.work) / "cells.json"
    state = _read(state_path)
    if not args.report:
        run_grid(args, state, state_path)
    size = _size(args)
    keys = [cell_key(b, pr, seed, args.variant, size) for b, pr, seed in cells(args)]
    done = [state["cells"][k] for k in keys if k in state["cells"]]
    return {"size": size, "cells": done,
            "frozen": {short(b): state["frozen"][short(b)] for b in args.backbones
                       if short(b) in state["frozen"]}}


def _size(args: argparse.Namespace) -> str:
    return f"{args.steps}x{args.batch_size}x{args.max_length}"


# -- the grid -------------------------------------------------------------------------
def cells(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Cheapest and most collapse-prone first: the toy Prompting LLM before the 135M one,
    SmolLM2 before Gemma 3, then seeds, so a grid stopped early has read the most."""
    def cost(ref: str) -> int:
        return 0 if "smollm2" in ref else 1

    combos = sorted(((b, pr) for b in args.backbones for pr in args.promptings),
                    key=lambda c: (c[1] != TOY_PROMPTING, cost(c[0])))
    return [(b, pr, seed) for b, pr in combos for seed in args.seeds]


def cell_key(backbone: str, prompting: str, seed: int, variant: str, size: str) -> str:
    return f"{variant}|{short(backbone)}|{short(prompting)}|seed{seed}|{size}"


def run_grid(args: argparse.Namespace, results: dict, path: Path) -> None:
    work = Path(args.work)
    data, dev = _data(work, args.dev)
    size = _size(args)
    commit, dirty = harness.git_state()
    invocation = {"git_commit": commit, "dirty": dirty, "machine": harness.machine(args.threads),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for backbone, prompting, seed in cells(args):
        key = cell_key(backbone, prompting, seed, args.variant, size)
        if key in results["cells"] and "error" not in results["cells"][key]:
            continue  # finished; a cell that failed (killed for memory, say) runs again
        frozen = frozen_score(results, backbone, dev, args.max_length, path)
        folder = work / key.replace("|", "-")
        command = train_command(args, backbone, prompting, seed, data, dev, folder)
        print(f"== {key}: {' '.join(command)}", flush=True)
        env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
        t0 = time.perf_counter()
        proc = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        cell = {"backbone": short(backbone), "prompting": short(prompting), "seed": seed,
                "variant": args.variant, "size": size, "wall_s": round(wall, 1),
                "command": " ".join(shlex.quote(c) for c in command), **invocation}
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1:]
            # a run killed by a signal (the kernel's OOM killer) leaves no traceback
            cell["error"] = [f"exit {proc.returncode}", *last]
        else:
            cell.update(read_run(folder / "log.jsonl", frozen))
        results["cells"][key] = cell
        _write(path, results)
        print(f"   {cell.get('final')} (best {cell.get('best')}, frozen {frozen:.4f}, "
              f"collapsed {cell.get('collapsed')}, rollbacks {cell.get('rollbacks')}) "
              f"in {wall:.0f} s", flush=True)


def train_command(args: argparse.Namespace, backbone: str, prompting: str, seed: int,
                  data: Path, dev: Path, folder: Path) -> list[str]:
    family, model = parse_ref(backbone)
    return [sys.executable, "-m", "pe_core.cli", "train", "--backbone", family,
            *(["--model", model] if model else []), "--prompting", prompting,
            "--data", str(data), "--dev-data", str(dev), "--out", str(folder), "--overwrite",
            "--steps", str(args.steps), "--batch-size", str(args.batch_size),
            "--max-length", str(args.max_length), "--eval-every", str(args.eval_every),
            "--seed", str(seed), "--device", "cpu", "--no-progress",
            *shlex.split(args.extra)]


def read_run(log: Path, frozen: float) -> dict[str, Any]:
    """Best, final and collapse verdict of a finished run's ``log.jsonl``."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "dev_score" in r and "restored_best" not in r]
    restored = [r for r in records if "restored_best" in r]
    curve = [(r["step"], round(r.get("train_time_s", 0.0), 1), round(r["dev_score"], 4))
             for r in evals]
    best = max(v for _, _, v in curve)
    final_raw = curve[-1][2]
    final = round(restored[-1]["dev_score"], 4) if restored else final_raw
    losses = [r["loss"] for r in records if "loss" in r]
    return {"best": best, "final": final, "final_raw": final_raw, "frozen": round(frozen, 4),
            "collapsed": collapsed(final, best, frozen),
            "rollbacks": sum("rollback" in r for r in records),
            "restored_best": bool(restored), "curve": curve,
            "max_loss": round(max(losses), 3) if losses else None,
            "train_s": round(records[-1].get("train_time_s", 0.0), 1)}


def collapsed(final: float, best: float, frozen: float) -> bool:
    return final < DROP * best or final < frozen + NEAR_FROZEN


def frozen_score(results: dict, backbone: str, dev: Path, max_length: int, path: Path) -> float:
    """The frozen backbone without a prompt on the dev pairs: the better pooling (kept in
    the result file, computed once per backbone)."""
    name = short(backbone)
    if name not in results["frozen"]:
        import warnings

        import pe_core
        from pe_core.eval.run import WithoutPrompt
        from pe_core.training.data import read_pairs
        from pe_core.training.dev_eval import MAIN_SCORE, retrieval_scores

        family, model = parse_ref(backbone)
        examples = read_pairs(str(dev)).examples
        scores = {}
        for pooling in ("last", "mean"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                frozen = pe_core.load(backbone=family, model=model, device="cpu",
                                      pooling=pooling, max_length=max_length,
                                      allow_untrained=True)
            got = retrieval_scores(WithoutPrompt(frozen), examples)
            scores[pooling] = round(got[MAIN_SCORE], 4)
            del frozen
        results["frozen"][name] = scores
        _write(path, results)
    return max(results["frozen"][name].values())


def _data(work: Path, n_dev: int) -> tuple[Path, Path]:
    """The corpus's train split and its first ``n_dev`` dev pairs, written once."""
    from pe_core.data import DOC_INSTRUCTION, load_pairs
    from pe_core.data.corpus import write_training_jsonl

    work.mkdir(parents=True, exist_ok=True)
    data, dev = work / "train.jsonl", work / f"dev{n_dev}.jsonl"
    if not data.is_file():
        write_training_jsonl(data, split="train")
    if not dev.is_file():
        rows = [{"query": x.query, "positive": x.document, "instruction": DOC_INSTRUCTION}
                for x in load_pairs("dev")[:n_dev]]
        dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, dev


# -- reporting (python -m benchmarks.render) ---------------------------------------------
def markdown(results: dict, args: dict) -> str | None:
    """The per-seed table and the collapses per backbone x Prompting LLM."""
    rows = results.get("cells")
    if not rows:
        return None
    lines = [f"Size {results.get('size')} (steps x batch x tokens). Collapsed: final < "
             f"{DROP:g}x best, or within {NEAR_FROZEN:g} of the frozen backbone (better "
             "pooling, no prompt, same dev pairs).", "",
             "| variant | backbone | Prompting LLM | seed | best dev | final dev | frozen | "
             "collapsed | rollbacks | train s |", "|---|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for c in rows:
        if "error" in c:
            lines.append(f"| {c['variant']} | {c['backbone']} | {c['prompting']} | {c['seed']} "
                         f"| error: {c['error'][0][:60]} | | | | | |")
            continue
        final = (f"{c['final']:.4f}" + (f" (last {c['final_raw']:.4f})"
                                        if c["restored_best"] else ""))
        lines.append(f"| {c['variant']} | {c['backbone']} | {c['prompting']} | {c['seed']} | "
                     f"{c['best']:.4f} | {final} | {c['frozen']:.4f} | "
                     f"{'**yes**' if c['collapsed'] else 'no'} | {c['rollbacks']} | "
                     f"{c['train_s']:.0f} |")
    lines += ["", "| variant | backbone | Prompting LLM | runs | collapsed | mean final |",
              "|---|---|---|---:|---:|---:|"]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for c in rows:
        if "error" not in c:
            groups.setdefault((c["variant"], c["backbone"], c["prompting"]), []).append(c)
    for (variant, backbone, prompting), group in groups.items():
        mean = sum(c["final"] for c in group) / len(group)
        lines.append(f"| {variant} | {backbone} | {prompting} | {len(group)} | "
                     f"{sum(c['collapsed'] for c in group)} | {mean:.4f} |")
    frozen = ", ".join(f"{b}: last {s['last']:.4f} / mean {s['mean']:.4f}"
                       for b, s in results.get("frozen", {}).items())
    return "\n".join(lines + ["", f"Frozen backbone, no prompt, dev nDCG@10: {frozen}"])


def plot_panels(results: dict) -> dict[str, dict[str, list]]:
    """One panel per backbone x Prompting LLM, one dev curve per variant and seed."""
    panels: dict[str, dict[str, list]] = {}
    for c in results.get("cells", []):
        if "curve" in c:
            label = f"{c['variant']} seed {c['seed']}" + (" (collapsed)" if c["collapsed"]
                                                          else "")
            panels.setdefault(f"{c['backbone']} / {c['prompting']}", {})[label] = c["curve"]
    return panels


def plot_marks(results: dict) -> dict[str, float]:
    return {f"frozen {b}": max(s.values()) for b, s in results.get("frozen", {}).items()}


def _read(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"cells": {}, "frozen": {}}


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
