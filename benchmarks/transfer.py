"""Transfer to an unseen backbone: how long ``pe align`` takes to converge, versus
``pe train`` from scratch on that backbone and the LoRA baseline from scratch (same
data, loss, step budget and dev set; each run's log has the dev nDCG@10 every
``--eval-every`` steps).

Three ways to read "converged", all in the table (ratios: the other run's time over
``pe align``'s):

* **scratch's final** (the reading that decides, as MLPerf's time-to-target does): time
  to 95 % of the score ``pe train`` from scratch ends at, one bar for every run;
* **own final**: time to 95 % of the run's own final score (mean of its last evaluations);
* **align's final**: time to 95 % of ``pe align``'s final score.

A run that never gets there in ``--steps`` gives a lower bound (its whole training time).

Data: the local corpus (``pe_core.data``: one-line summaries -> the documentation they
summarise), train split for training, part of the dev split for the dev score.
Models (``--tier``, ``benchmarks/tiers.py``): ``toy`` llama -> qwen of the embedded default
family, ``real`` SmolLM2-135M-Instruct -> Gemma 3 270M; ``--source``/``--target`` take
any ``family:model``.

    python -m benchmarks.transfer --name toy             # llama -> qwen, 300 steps each
    python -m benchmarks.transfer --target gemma:pe-default:gemma
    python -m benchmarks.transfer --tier real --work runs/tr   # SmolLM2 -> Gemma 3, 60 steps
    python -m benchmarks.transfer --tier real --prompting pe-real:smollm2-135m --work runs/tr2
    python -m benchmarks.transfer --work runs/t --report      # re-read finished runs' logs
    python -m benchmarks.transfer --runs align scratch --seed 1 --work runs/t1  # no LoRA
    python -m benchmarks.transfer --runs align scratch --hard-negatives 0  # cheaper steps

Time is training time (the sum of step times, evaluations excluded), read from each
run's ``log.jsonl``. The record goes to ``benchmarks/results/transfer/`` (see
``benchmarks.harness``); ``python -m benchmarks.render`` draws its table and curves. Not
a test: run it by hand (toy: about 30 minutes on 2 CPU cores; real: see the docs'
Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import harness
from benchmarks.curves import first_reach, read_curve
from benchmarks.tiers import REAL_PROMPTING, TIERS, TOY_PROMPTING, given, parse_ref, short

ALIGN, SCRATCH = "pe align (from source run)", "pe train from scratch"
LORA = "LoRA r=16 from scratch"
FOLDERS = {ALIGN: "align", SCRATCH: "scratch", LORA: "lora"}


def summarise(runs: dict[str, Path], fraction: float, last: int) -> dict:
    """Every run's curve plus its time to each of the three targets."""
    out = {name: read_curve(folder / "log.jsonl", last) for name, folder in runs.items()}
    targets = {"own": None, "align": fraction * out[ALIGN]["final"],
               "scratch": fraction * out[SCRATCH]["final"]}
    for r in out.values():
        r["reach"] = {k: first_reach(r["curve"], fraction * r["final"] if v is None else v)
                      for k, v in targets.items()}
    return {"targets": targets, "runs": out}


def ratio(r: dict, align: dict, key: str) -> str:
    mine, theirs = align["reach"][key], r["reach"][key]
    if mine is None:
        return "n/a"
    if mine[1] <= 0:
        return "align starts above it"
    if theirs is None:
        return f"> {r['total_s'] / mine[1]:.1f}x (never)"
    return f"{theirs[1] / mine[1]:.1f}x"


def render(summary: dict, fraction: float, last: int, title: str) -> str:
    pct = int(round(fraction * 100))
    t = summary["targets"]
    runs = summary["runs"]
    align = runs[ALIGN]

    def when(r: dict, key: str) -> str:
        hit = r["reach"][key]
        if hit is None:
            return f"never in {r['total_s']:.0f} s"
        return f"{hit[1]:.1f} s (step {hit[0]})"

    lines = [title, "",
             f"| run | dev nDCG@10 at step 0 | final (mean of last {last}) | "
             f"**to {t['scratch']:.3f} ({pct} % of scratch's final)** | align faster by | "
             f"to {pct} % of own final | align faster by | "
             f"to {t['align']:.3f} ({pct} % of align's final) | align faster by | ms/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        cells = []
        for key in ("scratch", "own", "align"):
            cells += [when(r, key), "–" if r is align else ratio(r, align, key)]
        lines.append(f"| {name} | {r['start']:.3f} | {r['final']:.3f} | " + " | ".join(cells)
                     + f" | {r['ms_per_step']:.0f} |")
    return "\n".join(lines)


def markdown(results: dict, args: dict) -> str | None:
    """For ``python -m benchmarks.render``: the setup line and the reading table (None
    for a record without the runs' curves)."""
    if "runs" not in results or "targets" not in results:
        return None
    return render(results, args.get("fraction", 0.95), args.get("final_evals", 3),
                  results.get("setup", ""))


def plot_panels(results: dict) -> dict[str, dict[str, list]]:
    return {"dev nDCG@10 against training time": {
        name: r["curve"] for name, r in results.get("runs", {}).items()}}


def plot_marks(results: dict) -> dict[str, float]:
    targets = results.get("targets", {})
    return {f"95 % of {key}'s final": targets[key] for key in ("align", "scratch")
            if targets.get(key) is not None}


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__, threads=None, threads_help="torch threads (default: 1 toy, 2 real)")
    p.add_argument("--tier", choices=sorted(TIERS), default="toy",
                   help="toy: llama -> qwen of the embedded defaults; real: SmolLM2-135M -> "
                        "Gemma 3 270M (see benchmarks/tiers.py); --source/--target override")
    p.add_argument("--source", help="source backbone as family:model (default: the tier's)")
    p.add_argument("--target", help="target backbone as family:model (default: the tier's)")
    p.add_argument("--prompting", default=None,
                   help=f"Prompting LLM of stage 1 and of scratch (default {TOY_PROMPTING}; "
                        f"{REAL_PROMPTING} is the instruction-tuned real one)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps of every run (default: 300 toy, 60 real)")
    p.add_argument("--source-steps", type=int, default=None, help="stage-1 steps (default --steps)")
    p.add_argument("--scratch-steps", type=int, default=None,
                   help="steps of pe train from scratch (default --steps); more steps give "
                        "it more time to reach align's bar")
    p.add_argument("--runs", nargs="+", choices=("align", "scratch", "lora"),
                   default=["align", "scratch", "lora"],
                   help="which runs to train (the others are read from --work)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--hard-negatives", type=int, default=1,
                   help="hard negatives per pair in every run (1: the training default)")
    p.add_argument("--eval-every", type=int, default=None, help="default: 10 toy, 5 real")
    p.add_argument("--dev", type=int, default=None,
                   help="dev pairs scored (default: 334 toy, 128 real)")
    p.add_argument("--final-evals", type=int, default=3,
                   help="the final score is the mean of this many last evaluations")
    p.add_argument("--fraction", type=float, default=0.95)
    p.add_argument("--prompting-lora", type=int, default=0,
                   help="LoRA rank on the Prompting LLM in pe train (0: full fine-tuning)")
    p.add_argument("--lr", type=float, default=None,
                   help="Prompting LLM lr in pe train (its LoRA lr with --prompting-lora); "
                        "default: pe train's")
    p.add_argument("--alignment-lr", type=float, default=None,
                   help="alignment lr in pe train and pe align; default: each one's own")
    p.add_argument("--align-lr", type=float, default=None,
                   help="alignment lr of the pe align run only (wins over --alignment-lr)")
    p.add_argument("--lora-lr", type=float, default=3e-3,
                   help="LoRA baseline lr (default 3e-3, picked on dev for the small defaults)")
    p.add_argument("--reuse-source", action="store_true",
                   help="align from the stage-1 run already in --work/source (no retraining)")
    p.add_argument("--work", help="keep the runs here (default: a temp folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--report", action="store_true",
                   help="train nothing: summarise the finished runs in --work")
    # --seed (shared) is also every run's training seed: batch order, init noise
    args = harness.parse(p, argv, quick={"steps": 4, "eval_every": 2, "dev": 16, "batch": 4,
                                         "max_length": 32, "final_evals": 1})
    apply_tier(args)
    if (args.report or set(args.runs) != {"align", "scratch", "lora"}) and not args.work:
        p.error("--report and --runs need --work (the other runs are read from there)")
    harness.run("transfer", args, measure, argv)


def measure(args: argparse.Namespace) -> dict:
    """Train what ``--runs`` asks for and read every finished run's curve."""
    work = Path(args.work or tempfile.mkdtemp(prefix="pe-transfer-"))
    source_s = None if args.report else train_all(args, work)
    scratch = args.scratch_steps or args.steps
    title = (f"{short(args.source)} -> {short(args.target)}; {args.steps} steps of batch "
             f"{args.batch}, {args.hard_negatives} hard negative(s) per pair"
             + ("" if scratch == args.steps else f" ({scratch} from scratch)")
             + f"; dev nDCG@10 on {args.dev} pairs every {args.eval_every} steps; "
             f"{args.threads} thread(s); seed {args.seed}; Prompting LLM {short(args.prompting)}"
             + ("" if source_s is None else f"; stage 1 took {source_s:.0f} s (not counted)"))
    runs = {name: work / folder for name, folder in FOLDERS.items()
            if (work / folder / "log.jsonl").is_file()}
    missing = {ALIGN, SCRATCH} - runs.keys()
    if missing:
        raise SystemExit(f"no finished run for {sorted(missing)} under {work}")
    summary = summarise(runs, args.fraction, args.final_evals)
    print(render(summary, args.fraction, args.final_evals, title))
    return {"setup": title, "stage1_s": source_s, **summary}


REAL_DEFAULTS = dict(steps=60, eval_every=5, dev=128, threads=2)
TOY_DEFAULTS = dict(steps=300, eval_every=10, dev=334, threads=1)


def apply_tier(args: argparse.Namespace) -> None:
    """Fill what was not given from the tier: models, budget, dev size, threads."""
    tier = TIERS[args.tier]
    args.source = args.source or tier.transfer[0]
    args.target = args.target or tier.transfer[1]
    args.prompting = args.prompting or tier.prompting[0]
    for key, value in (REAL_DEFAULTS if args.tier == "real" else TOY_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def train_all(args: argparse.Namespace, work: Path) -> float | None:
    """Stage 1 on the source backbone and ``pe align``, then the runs from scratch on
    the target (those of ``args.runs``); returns the stage-1 seconds (None: not run)."""
    import torch

    import pe_core
    from pe_core.data import DOC_INSTRUCTION, load_pairs, training_records

    torch.set_num_threads(args.threads)
    work.mkdir(parents=True, exist_ok=True)
    train_path = work / "train.jsonl"
    train_path.write_text("".join(
        json.dumps(r) + "\n" for r in training_records(load_pairs("train"), negatives=1)
    ))
    dev = [{"query": x.query, "positive": x.document, "instruction": DOC_INSTRUCTION}
           for x in load_pairs("dev")[: args.dev]]

    p_opts = given(prompting_lora=args.prompting_lora or None,
                   **{"lora_lr" if args.prompting_lora else "lr": args.lr},
                   alignment_lr=args.alignment_lr)
    common = dict(batch_size=args.batch, max_length=args.max_length,
                  hard_negatives=args.hard_negatives, eval_every=args.eval_every,
                  progress=not args.no_progress, save_every=10**9, overwrite=True,
                  dev_data=dev, seed=args.seed)
    src_backbone, src_model = parse_ref(args.source)
    tgt_backbone, tgt_model = parse_ref(args.target)
    source_s = None
    if "align" in args.runs:
        if args.reuse_source:
            if not (work / "source" / "log.jsonl").is_file():
                raise SystemExit(f"--reuse-source: no finished stage-1 run in {work / 'source'}")
            print(f"stage 1: reusing {work / 'source'}", file=sys.stderr)
        else:
            t0 = time.perf_counter()
            print("stage 1: pe train on the source backbone", file=sys.stderr)
            pe_core.train(str(train_path), backbone=src_backbone, model=src_model,
                          prompting=args.prompting, out=work / "source",
                          steps=args.source_steps or args.steps, **p_opts, **common)
            source_s = time.perf_counter() - t0
        print("pe align -> target", file=sys.stderr)
        pe_core.align(work / "source", str(train_path), backbone=tgt_backbone,
                      model=tgt_model, out=work / FOLDERS[ALIGN], steps=args.steps,
                      **given(alignment_lr=args.align_lr or args.alignment_lr), **common)
    if "scratch" in args.runs:
        print("pe train from scratch on the target", file=sys.stderr)
        pe_core.train(str(train_path), backbone=tgt_backbone, model=tgt_model,
                      prompting=args.prompting, out=work / FOLDERS[SCRATCH],
                      steps=args.scratch_steps or args.steps, **p_opts, **common)
    if "lora" in args.runs:
        print("LoRA baseline from scratch on the target", file=sys.stderr)
        pe_core.train(str(train_path), backbone=tgt_backbone, model=tgt_model,
                      out=work / FOLDERS[LORA], method="lora", steps=args.steps,
                      lora_lr=args.lora_lr, **common)
    return source_s


if __name__ == "__main__":
    main()
