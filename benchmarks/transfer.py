"""Transfer to an unseen backbone: how long ``pe align`` takes to converge, versus
``pe train`` from scratch on that backbone and the LoRA baseline from scratch (same
data, loss and dev set; each run's log has the dev nDCG@10 every ``--eval-every`` steps).

Three ways to read "converged", all in the table (ratios: the other run's time over
``pe align``'s):

* **own final**: time to 95 % of the run's own final score (mean of its last evaluations);
* **align's final**: time to 95 % of ``pe align``'s final score;
* **scratch's final**: time to 95 % of ``pe train`` from scratch's final score.

A run that never gets there in ``--steps`` gives a lower bound (its whole training time).

Data: the local corpus (``pe_core.data``: one-line summaries -> the documentation they
summarise), train split for training, part of the dev split for the dev score.
Models: the embedded default family (``pe-default:*``) unless given.

    python benchmarks/transfer.py --out benchmarks/results      # llama -> qwen, 300 steps each
    python benchmarks/transfer.py --target-backbone gemma --target-model pe-default:gemma
    python benchmarks/transfer.py --work runs/t --report       # re-read finished runs' logs
    python benchmarks/transfer.py --runs align scratch --seed 1 --work runs/t1  # no LoRA
    python benchmarks/transfer.py --runs align scratch --hard-negatives 0  # cheaper steps

Time is training time (the sum of step times, evaluations excluded), read from each
run's ``log.jsonl``. Writes ``transfer.{md,json,png}`` under ``--out``. Not a test: run
it by hand (about 30 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ALIGN, SCRATCH = "pe align (from source run)", "pe train from scratch"
LORA = "LoRA r=16 from scratch"
FOLDERS = {ALIGN: "align", SCRATCH: "scratch", LORA: "lora"}


def read_curve(log: Path, last: int = 3) -> dict:
    """A run's dev curve ``[(step, train seconds, score)]``, final score (mean of the last
    ``last`` evaluations: one small dev set's score is noisy), total time, ms/step."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "dev_score" in r]
    steps = [r for r in records if "loss" in r]
    total = steps[-1]["train_time_s"] if steps else 0.0
    return {
        "start": evals[0]["dev_score"],
        "final": sum(r["dev_score"] for r in evals[-last:]) / len(evals[-last:]),
        "total_s": total, "ms_per_step": 1000 * total / len(steps) if steps else 0.0,
        "curve": [(r["step"], round(r["train_time_s"], 2), round(r["dev_score"], 4))
                  for r in evals],
    }


def first_reach(curve: list, score: float) -> tuple[int, float] | None:
    """(step, seconds) of the first evaluation at or above ``score``; None if never."""
    return next(((st, t) for st, t, v in curve if v >= score), None)


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
    if mine is None or mine[1] <= 0:
        return "n/a"
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
             f"to {pct} % of own final | align faster by | "
             f"to {t['align']:.3f} ({pct} % of align's final) | align faster by | "
             f"to {t['scratch']:.3f} ({pct} % of scratch's final) | align faster by | ms/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in runs.items():
        cells = []
        for key in ("own", "align", "scratch"):
            cells += [when(r, key), "–" if r is align else ratio(r, align, key)]
        lines.append(f"| {name} | {r['start']:.3f} | {r['final']:.3f} | " + " | ".join(cells)
                     + f" | {r['ms_per_step']:.0f} |")
    return "\n".join(lines)


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for (name, r), color in zip(summary["runs"].items(), ("#2ca02c", "#1f77b4", "#d62728"),
                                strict=False):
        ax.plot([c[1] for c in r["curve"]], [c[2] for c in r["curve"]], marker=".",
                color=color, label=name)
    for key, style in (("align", ":"), ("scratch", "--")):
        ax.axhline(summary["targets"][key], color="#888888", linestyle=style, linewidth=1,
                   label=f"95 % of {key}'s final")
    ax.set_xscale("symlog", linthresh=10)  # LoRA takes 10x longer than the others
    ax.set_xlim(left=0)
    ax.set_xlabel("training time (s, evaluations excluded; log scale above 10 s)")
    ax.set_ylabel("dev nDCG@10")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source-backbone", default="llama")
    p.add_argument("--source-model", default="pe-default:llama")
    p.add_argument("--target-backbone", default="qwen")
    p.add_argument("--target-model", default="pe-default:qwen")
    p.add_argument("--prompting", default="pe-default:prompting")
    p.add_argument("--steps", type=int, default=300, help="steps of every run")
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
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--dev", type=int, default=334, help="dev pairs scored")
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
    p.add_argument("--lora-lr", type=float, default=3e-3,
                   help="LoRA baseline lr (default 3e-3, picked on dev for the small defaults)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0,
                   help="training seed of every run (batch order, init noise, Gumbel noise)")
    p.add_argument("--work", help="keep the runs here (default: a temp folder)")
    p.add_argument("--out", default="benchmarks/results",
                   help="write transfer.md, transfer.json and transfer.png here")
    p.add_argument("--report", action="store_true",
                   help="train nothing: summarise the finished runs in --work")
    args = p.parse_args()
    if (args.report or set(args.runs) != {"align", "scratch", "lora"}) and not args.work:
        p.error("--report and --runs need --work (the other runs are read from there)")
    work = Path(args.work or tempfile.mkdtemp(prefix="pe-transfer-"))
    source_s = None if args.report else train_all(args, work)
    scratch = args.scratch_steps or args.steps
    title = (f"{args.source_backbone} -> {args.target_backbone}; {args.steps} steps of batch "
             f"{args.batch}, {args.hard_negatives} hard negative(s) per pair"
             + ("" if scratch == args.steps else f" ({scratch} from scratch)")
             + f"; dev nDCG@10 on {args.dev} pairs every {args.eval_every} steps; "
             f"{args.threads} thread(s); seed {args.seed}"
             + ("" if source_s is None else f"; stage 1 took {source_s:.0f} s (not counted)"))
    runs = {name: work / folder for name, folder in FOLDERS.items()
            if (work / folder / "log.jsonl").is_file()}
    missing = {ALIGN, SCRATCH} - runs.keys()
    if missing:
        p.error(f"no finished run for {sorted(missing)} under {work}")
    summary = summarise(runs, args.fraction, args.final_evals)
    table = render(summary, args.fraction, args.final_evals, title)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.md").write_text(table + "\n")
    (out / "transfer.json").write_text(json.dumps({"args": vars(args), **summary}, indent=2))
    plot(summary, out / "transfer.png", title)


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

    def given(**kw: object) -> dict:
        return {k: v for k, v in kw.items() if v is not None}

    p_opts = given(prompting_lora=args.prompting_lora or None,
                   **{"lora_lr" if args.prompting_lora else "lr": args.lr},
                   alignment_lr=args.alignment_lr)
    common = dict(batch_size=args.batch, max_length=args.max_length,
                  hard_negatives=args.hard_negatives, eval_every=args.eval_every,
                  progress=False, save_every=10**9, overwrite=True, dev_data=dev, seed=args.seed)
    source_s = None
    if "align" in args.runs:
        t0 = time.perf_counter()
        print("stage 1: pe train on the source backbone", file=sys.stderr)
        pe_core.train(str(train_path), backbone=args.source_backbone, model=args.source_model,
                      prompting=args.prompting, out=work / "source",
                      steps=args.source_steps or args.steps, **p_opts, **common)
        source_s = time.perf_counter() - t0
        print("pe align -> target", file=sys.stderr)
        pe_core.align(work / "source", str(train_path), backbone=args.target_backbone,
                      model=args.target_model, out=work / FOLDERS[ALIGN], steps=args.steps,
                      **given(alignment_lr=args.alignment_lr), **common)
    if "scratch" in args.runs:
        print("pe train from scratch on the target", file=sys.stderr)
        pe_core.train(str(train_path), backbone=args.target_backbone, model=args.target_model,
                      prompting=args.prompting, out=work / FOLDERS[SCRATCH],
                      steps=args.scratch_steps or args.steps, **p_opts, **common)
    if "lora" in args.runs:
        print("LoRA baseline from scratch on the target", file=sys.stderr)
        pe_core.train(str(train_path), backbone=args.target_backbone, model=args.target_model,
                      out=work / FOLDERS[LORA], method="lora", steps=args.steps,
                      lora_lr=args.lora_lr, **common)
    return source_s


if __name__ == "__main__":
    main()
