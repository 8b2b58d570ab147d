"""``pe train``, ``pe align`` and ``pe plot``.

Nothing heavy is imported until a command runs, so ``pe --help`` stays fast. More than
one process: ``torchrun --nproc-per-node 2 -m pe_core.cli train ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# argparse dest -> TrainSettings / model option (only those given are passed on)
_SETTING_FLAGS = (
    "steps", "epochs", "batch_size", "lr", "alignment_lr", "lora_lr", "weight_decay",
    "warmup", "max_grad_norm", "temperature", "hard_negatives", "gumbel_tau_start",
    "gumbel_tau_end", "gumbel_anneal_steps", "straight_through", "prompting_lora", "lora_r",
    "grad_cache_chunk", "gradient_checkpointing", "bf16", "text_kv_cache_mb", "save_every",
    "keep_checkpoints", "eval_every", "dev_size", "seed",
)
_MODEL_FLAGS = ("placement", "pooling", "num_soft_tokens", "document_instruction", "max_length")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected on/off, got {text!r}")


def _common(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--data", required=True,
                   help="training JSONL {query, positive, negatives?, instruction?, task?}")
    p.add_argument("--dev-data", help="held-out JSONL pairs for the dev score")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in --out")
    if device:  # `pe train` has them from add_model_args
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--dtype", help="weights dtype: float32 (default), bfloat16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("schedule")
    g.add_argument("--steps", type=int, help="optimizer steps (default: --epochs passes)")
    g.add_argument("--epochs", type=float)
    g.add_argument("--batch-size", type=int, help="global batch size (default 32)")
    g.add_argument("--lr", type=float, help="Prompting LLM lr (full fine-tuning; default 1e-4)")
    g.add_argument("--alignment-lr", type=float,
                   help="alignment lr (default: 1e-2 in train, 3e-3 in align)")
    g.add_argument("--lora-lr", type=float, help="lr of LoRA weights (default 2e-4)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--warmup", type=float, help="fraction (<1) or number of warmup steps")
    g.add_argument("--max-grad-norm", type=float)
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("loss")
    g.add_argument("--temperature", type=float, help="InfoNCE temperature (default 0.05)")
    g.add_argument("--hard-negatives", type=int, help="hard negatives per example (default 1)")
    g = p.add_argument_group("efficiency")
    g.add_argument("--grad-cache-chunk", type=int, help="GradCache sub-batch size (0: off)")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None)
    g.add_argument("--bf16", type=_bool, metavar="on|off", help="bf16 autocast (default: on CUDA)")
    g.add_argument("--text-kv-cache-mb", type=float,
                   help="suffix: keep texts' keys/values across epochs (MB, 0: off)")
    g = p.add_argument_group("bookkeeping")
    g.add_argument("--save-every", type=int, help="checkpoint every N steps (default 200)")
    g.add_argument("--keep-checkpoints", type=int)
    g.add_argument("--eval-every", type=int, help="dev score every N steps (0: at the end)")
    g.add_argument("--dev-size", type=int, help="hold out N training pairs as dev data")


def register(sub: Any) -> None:
    from pe_core.cli.encode_cmd import add_model_args

    p = sub.add_parser("train", help="train a PromptEmbedder (or the LoRA baseline)")
    add_model_args(p, alignment=False)
    p.add_argument("--alignment", help="start from this alignment instead of least squares")
    p.add_argument("--method", choices=("pe", "lora", "full"), default="pe",
                   help="pe: Prompting LLM + alignment; lora: LoRA baseline on the backbone")
    _common(p, device=False)
    g = p.add_argument_group("PromptEmbedder")
    g.add_argument("--prompting-lora", type=int, metavar="R",
                   help="peft LoRA of rank R on the Prompting LLM (default: full)")
    g.add_argument("--placement", choices=("prefix", "suffix"))
    g.add_argument("--pooling", choices=("last", "mean"))
    g.add_argument("--num-soft-tokens", type=int, help="K (default 5)")
    g.add_argument("--document-instruction", help="generic instruction for documents ('' for none)")
    g.add_argument("--max-length", type=int)
    g.add_argument("--gumbel-tau-start", type=float)
    g.add_argument("--gumbel-tau-end", type=float)
    g.add_argument("--gumbel-anneal-steps", type=int)
    g.add_argument("--straight-through", action="store_true", default=None)
    g.add_argument("--lora-r", type=int, help="LoRA baseline rank (default 16)")
    p.set_defaults(func=run_train)

    a = sub.add_parser("align", help="transfer a trained run to a new backbone (alignment only)")
    a.add_argument("--from", dest="source", required=True, help="a `pe train` output folder")
    a.add_argument("--backbone", required=True, help="the new backbone's name")
    a.add_argument("--model", help="the new backbone model: folder or Hub id[@revision]")
    _common(a)
    a.add_argument("--placement", choices=("prefix", "suffix"))
    a.add_argument("--max-length", type=int)
    a.add_argument("--init", choices=("source", "tokens"), default="source",
                   help="source (default): carry the trained alignment over through the two "
                        "backbones' token embeddings; tokens: fit the Prompting LLM's "
                        "token embeddings to the new backbone's")
    a.set_defaults(func=run_align)

    pl = sub.add_parser("plot", help="draw a run's loss curve to PNG")
    pl.add_argument("run", help="a training output folder (or its log.jsonl)")
    pl.add_argument("--output", "-o", help="PNG path (default RUN/loss.png)")
    pl.set_defaults(func=run_plot)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for name in _SETTING_FLAGS + _MODEL_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    if out.get("document_instruction") == "":
        out["document_instruction"] = None
    if getattr(args, "no_progress", False):
        out["progress"] = False
    return out


def _report(result: Any) -> None:
    import os

    if os.environ.get("RANK", "0") != "0":  # under torchrun, one line from rank 0
        return
    dev = f", dev nDCG@10 {result.dev['ndcg@10']:.4f}" if result.dev else ""
    loss = f"{result.loss:.4f}" if result.loss is not None else "n/a"
    print(f"trained {result.steps} steps (last loss {loss}{dev}); wrote {result.out}",
          file=sys.stderr)


def run_train(args: argparse.Namespace) -> int:
    import pe_core

    result = pe_core.train(
        args.data, backbone=args.backbone, model=args.model, prompting=args.prompting,
        out=args.out, method=args.method, alignment=args.alignment, dev_data=args.dev_data,
        resume=args.resume, overwrite=args.overwrite, device=args.device, dtype=args.dtype,
        **_options(args),
    )
    _report(result)
    return 0


def run_align(args: argparse.Namespace) -> int:
    import pe_core

    result = pe_core.align(
        args.source, args.data, backbone=args.backbone, model=args.model, out=args.out,
        dev_data=args.dev_data, resume=args.resume, overwrite=args.overwrite,
        device=args.device, dtype=args.dtype, init=args.init, **_options(args),
    )
    _report(result)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from pe_core.training.plot import plot_run

    print(plot_run(args.run, args.output))
    return 0
