"""Transfer to an unseen backbone: how long ``pe align`` takes to reach 95 % of its final
dev score, versus ``pe train`` from scratch on that backbone and the LoRA baseline from
scratch (each measured against its own final score, same data, loss and dev set).

Data: the local corpus (``pe_core.data``: one-line summaries -> the documentation they
summarise), train split for training, part of the dev split for the dev nDCG@10.
Models: the embedded defaults built on this machine (``pe-default:*``) unless given.

    python benchmarks/transfer.py                      # llama -> qwen, 150 steps each
    python benchmarks/transfer.py --target-backbone gemma --target-model pe-default:gemma

Time is training time (the sum of step times, evaluations excluded), read from each
run's ``log.jsonl``. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def time_to_fraction(
    log: Path, fraction: float, target: float | None = None, last: int = 3
) -> dict:
    """First evaluation reaching ``fraction`` of the final dev score, from a log; and the
    first reaching the absolute score ``target`` (None if never). "Final" is the mean of
    the last ``last`` evaluations: one small dev set's score is noisy."""
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    evals = [r for r in records if "dev_score" in r]
    steps = [r for r in records if "loss" in r]
    final = sum(r["dev_score"] for r in evals[-last:]) / len(evals[-last:])
    hit = next(r for r in evals if r["dev_score"] >= fraction * final)
    reach = None if target is None else next(
        (r for r in evals if r["dev_score"] >= target), None
    )
    return {
        "start": evals[0]["dev_score"], "final": final, "steps_to": hit["step"],
        "time_to": hit["train_time_s"],
        "time_to_target": None if reach is None else reach["train_time_s"],
        "ms_per_step": 1000 * steps[-1]["train_time_s"] / len(steps) if steps else 0.0,
        "curve": [(r["step"], round(r["train_time_s"], 2), round(r["dev_score"], 4))
                  for r in evals],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source-backbone", default="llama")
    p.add_argument("--source-model", default="pe-default:llama")
    p.add_argument("--target-backbone", default="qwen")
    p.add_argument("--target-model", default="pe-default:qwen")
    p.add_argument("--prompting", default="pe-default:prompting")
    p.add_argument("--steps", type=int, default=300, help="steps of every run")
    p.add_argument("--source-steps", type=int, default=None, help="stage-1 steps (default --steps)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=25)
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
                   help="alignment lr in pe train and pe align; default: theirs")
    p.add_argument("--lora-lr", type=float, default=None,
                   help="LoRA baseline lr; default: pe train --method lora's")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", help="keep the runs here (default: a temp folder)")
    p.add_argument("--json", help="also write the raw results here")
    args = p.parse_args()

    import torch

    import pe_core
    from pe_core.data import DOC_INSTRUCTION, load_pairs, training_records

    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="pe-transfer-"))
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
    common = dict(batch_size=args.batch, max_length=args.max_length, eval_every=args.eval_every,
                  progress=False, save_every=10**9, overwrite=True, dev_data=dev)
    t0 = time.perf_counter()
    print("stage 1: pe train on the source backbone", file=sys.stderr)
    pe_core.train(str(train_path), backbone=args.source_backbone, model=args.source_model,
                  prompting=args.prompting, out=work / "source",
                  steps=args.source_steps or args.steps, **p_opts, **common)
    source_s = time.perf_counter() - t0
    runs = {}
    print("pe align -> target", file=sys.stderr)
    pe_core.align(work / "source", str(train_path), backbone=args.target_backbone,
                  model=args.target_model, out=work / "align", steps=args.steps,
                  **given(alignment_lr=args.alignment_lr), **common)
    runs["pe align (from source run)"] = work / "align"
    print("pe train from scratch on the target", file=sys.stderr)
    pe_core.train(str(train_path), backbone=args.target_backbone, model=args.target_model,
                  prompting=args.prompting, out=work / "scratch", steps=args.steps,
                  **p_opts, **common)
    runs["pe train from scratch"] = work / "scratch"
    print("LoRA baseline from scratch on the target", file=sys.stderr)
    pe_core.train(str(train_path), backbone=args.target_backbone, model=args.target_model,
                  out=work / "lora", method="lora", steps=args.steps,
                  **given(lora_lr=args.lora_lr), **common)
    runs["LoRA r=16 from scratch"] = work / "lora"

    last = args.final_evals
    align = time_to_fraction(runs["pe align (from source run)"] / "log.jsonl", args.fraction,
                             last=last)
    target = args.fraction * align["final"]
    results = {name: time_to_fraction(folder / "log.jsonl", args.fraction, target, last)
               for name, folder in runs.items()}
    align = results["pe align (from source run)"]
    pct = int(round(args.fraction * 100))
    lines = [
        f"{args.source_backbone} -> {args.target_backbone}; {args.steps} steps of batch "
        f"{args.batch}; dev nDCG@10 on {len(dev)} pairs every {args.eval_every} steps; "
        f"{args.threads} thread(s); stage 1 took {source_s:.0f} s (not counted)", "",
        f"| run | dev nDCG@10 at step 0 | final (mean of last {last}) | "
        f"steps to {pct} % of own final | "
        f"time to {pct} % of own final (s) | align faster by | time to {target:.3f} "
        f"({pct} % of align's final) (s) | ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ratio = r["time_to"] / align["time_to"] if align["time_to"] > 0 else float("inf")
        reach = "never" if r["time_to_target"] is None else f"{r['time_to_target']:.1f}"
        lines.append(
            f"| {name} | {r['start']:.3f} | {r['final']:.3f} | {r['steps_to']} | "
            f"{r['time_to']:.1f} | {'-' if r is align else f'{ratio:.1f}x'} | {reach} | "
            f"{r['ms_per_step']:.0f} |"
        )
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
