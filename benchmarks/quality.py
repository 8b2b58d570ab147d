"""Quality on the local test tasks: nDCG@10 for the frozen backbone without a prompt,
PromptEmbedder (prefix and suffix), the LoRA baseline and BM25 on the source backbone;
and for transfer, alignment-only training on each other family versus full
PromptEmbedder training on that family. Writes a markdown table, a JSON file and a bar
chart (PNG).

    python benchmarks/quality.py --out benchmarks/results            # defaults below

Models: the embedded default family (``pe-default:*``, built on this machine). Data: the
local corpus's train split; scores on the test split of ``PELocalDocstringRetrieval``.
Not a test: run it by hand (about 20-30 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

TASK = "PELocalDocstringRetrieval"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--source", default="llama")
    p.add_argument("--targets", nargs="+", default=["mistral", "qwen", "gemma"])
    p.add_argument("--steps", type=int, default=150, help="steps of pe train and LoRA")
    p.add_argument("--align-steps", type=int, default=40)
    p.add_argument("--lora-lr", type=float, default=3e-3,
                   help="LoRA baseline lr (picked on dev: see pe_core.demo.DemoSettings)")
    p.add_argument("--align-init", default="source", choices=("source", "tokens"))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128, help="tokens per text")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--work", help="keep runs here (default: a temp folder)")
    args = p.parse_args()

    from pe_core.eval.mteb_env import prepare_mteb

    prepare_mteb()
    import pe_core
    from pe_core.data.corpus import write_training_jsonl
    from pe_core.eval.bm25 import bm25_baseline
    from pe_core.eval.run import WithoutPrompt, evaluate

    work = Path(args.work or tempfile.mkdtemp(prefix="pe-quality-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = work / "train.jsonl"
    write_training_jsonl(data, split="train")
    common = dict(batch_size=args.batch_size, max_length=args.max_length, overwrite=True,
                  device="cpu")
    results: list[dict] = []

    def record(group: str, label: str, backbone: str, model, seconds: float) -> None:
        t = time.perf_counter()
        score = evaluate(model, [TASK], name=f"pe/{label}-{backbone}")[TASK]
        results.append(dict(group=group, model=label, backbone=backbone, ndcg10=score,
                            train_s=round(seconds, 1), eval_s=round(time.perf_counter() - t, 1)))
        print(f"{group:10s} {label:28s} {backbone:8s} nDCG@10={score:.4f} ({seconds:.0f} s)")

    t = time.perf_counter()
    bm25 = bm25_baseline([TASK], eval_splits=["test"])[TASK]["test"]
    results.append(dict(group="source", model="BM25", backbone="-", ndcg10=bm25,
                        train_s=0.0, eval_s=round(time.perf_counter() - t, 1)))
    for pooling in ("last", "mean"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            frozen = pe_core.load(backbone=args.source, device="cpu", pooling=pooling,
                                  max_length=args.max_length)
        record("source", f"frozen, no prompt ({pooling})", args.source, WithoutPrompt(frozen), 0.0)

    # prefix: the soft prompt steers how the text is read, and the last text token is the
    # unprompted LM's next-token state, so prefix pools the mean; suffix pools the last
    # soft token, which has read the whole text
    for placement, pooling in (("prefix", "mean"), ("suffix", "last")):
        t = time.perf_counter()
        run = pe_core.train(data, backbone=args.source, out=work / f"pe-{placement}",
                            steps=args.steps, placement=placement, pooling=pooling, **common)
        record("source", f"PromptEmbedder {placement} ({pooling})", args.source, run.model,
               time.perf_counter() - t)
    t = time.perf_counter()
    lora = pe_core.train(data, backbone=args.source, out=work / "lora", method="lora",
                         steps=args.steps, lora_lr=args.lora_lr, **common)
    record("source", "LoRA r=16", args.source, lora.model, time.perf_counter() - t)

    source_run = work / "pe-suffix"
    for target in args.targets:
        t = time.perf_counter()
        moved = pe_core.align(source_run, data, backbone=target, out=work / f"align-{target}",
                              steps=args.align_steps, init=args.align_init, **common)
        record("transfer", "align only", target, moved.model, time.perf_counter() - t)
        t = time.perf_counter()
        full = pe_core.train(data, backbone=target, out=work / f"pe-{target}",
                             steps=args.steps, **common)
        record("transfer", "full PromptEmbedder", target, full.model, time.perf_counter() - t)

    (out / "quality.json").write_text(json.dumps(results, indent=2))
    table = render_table(results)
    (out / "quality.md").write_text(table + "\n")
    plot(results, out / "quality.png")
    print(table)


def render_table(results: list[dict]) -> str:
    by = {(r["model"], r["backbone"]): r["ndcg10"] for r in results}
    lines = ["| group | model | backbone | nDCG@10 | ratio | train s |", "|---" * 6 + "|"]
    lora = next((r["ndcg10"] for r in results if r["model"] == "LoRA r=16"), None)
    for r in results:
        if r["group"] == "source" and r["model"].startswith("PromptEmbedder") and lora:
            ratio = f"{r['ndcg10'] / lora:.2f}x LoRA"
        elif r["model"] == "align only":
            full = by.get(("full PromptEmbedder", r["backbone"]))
            ratio = f"{r['ndcg10'] / full:.2f}x full" if full else ""
        else:
            ratio = ""
        lines.append(f"| {r['group']} | {r['model']} | {r['backbone']} | {r['ndcg10']:.4f} | "
                     f"{ratio} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\n{r['backbone']}" for r in results]
    colors = ["#888888" if r["model"] == "BM25" or r["model"].startswith("frozen") else
              "#d62728" if r["model"].startswith("LoRA") else
              "#1f77b4" if r["group"] == "source" or r["model"] == "full PromptEmbedder" else
              "#2ca02c" for r in results]
    fig, ax = plt.subplots(figsize=(max(8, len(results) * 0.9), 4.5))
    ax.bar(range(len(results)), [r["ndcg10"] for r in results], color=colors)
    ax.set_xticks(range(len(results)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"nDCG@10 ({TASK}, test)")
    ax.set_title("pe quality on local tasks (embedded default family, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
