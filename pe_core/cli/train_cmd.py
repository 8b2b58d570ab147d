"""``pe train``, ``pe align`` and ``pe plot``.

Nothing heavy is imported until a command runs, so ``pe --help`` stays fast. More than
one process: ``torchrun --nproc-per-node 2 -m pe_core.cli train ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _option_classes() -> tuple[type, ...]:
    from pe_core.model.config import EmbedderConfig
    from pe_core.training.settings import TrainSettings

    return (TrainSettings, EmbedderConfig)


def _add_options(p: argparse.ArgumentParser, command: str) -> None:
    """One flag per setting and model option that ``command`` offers, as the fields
    declare them (:mod:`pe_core.options`); a flag left out passes nothing on."""
    from pe_core.options import add_flags

    add_flags(p, _option_classes(), command)


def _common(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--data", required=True,
                   help="training JSONL {query, positive, negatives?, instruction?, task?}")
    p.add_argument("--dev-data", help="held-out JSONL pairs for the dev score")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace what --out holds, once the new run is complete")
    if device:  # `pe train` has them from add_model_args
        p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--dtype", help="weights dtype: float32 (default), bfloat16")


def register(sub: Any) -> None:
    from pe_core.cli.encode_cmd import add_model_args

    p = sub.add_parser("train", help="train a PromptEmbedder (or the LoRA baseline)")
    add_model_args(p, alignment=False)
    p.add_argument("--alignment", help="start from this alignment instead of least squares")
    p.add_argument("--method", choices=("pe", "lora", "full"), default="pe",
                   help="pe: Prompting LLM + alignment; lora: LoRA baseline on the backbone")
    _common(p, device=False)
    _add_options(p, "train")
    p.set_defaults(func=run_train)

    a = sub.add_parser("align", help="transfer a trained run to a new backbone (alignment only)")
    a.add_argument("--from", dest="source", required=True, help="a `pe train` output folder")
    a.add_argument("--backbone", required=True, help="the new backbone's name")
    a.add_argument("--model", help="the new backbone model: folder or Hub id[@revision]")
    _common(a)
    _add_options(a, "align")
    a.add_argument("--init", choices=("source", "tokens"), default="source",
                   help="source (default): carry the trained alignment over through the two "
                        "backbones' token embeddings; tokens: fit the Prompting LLM's "
                        "token embeddings to the new backbone's")
    a.set_defaults(func=run_align)

    pl = sub.add_parser("plot", help="draw a run's loss curve to PNG")
    pl.add_argument("run", help="a training output folder (or its log.jsonl)")
    pl.add_argument("--output", "-o", help="PNG path (default RUN/loss.png)")
    pl.set_defaults(func=run_plot)


def _options(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """The settings and model options given on the command line."""
    from pe_core.options import flag_values

    return flag_values(args, _option_classes(), command)


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
        **_options(args, "train"),
    )
    _report(result)
    return 0


def run_align(args: argparse.Namespace) -> int:
    import pe_core

    result = pe_core.align(
        args.source, args.data, backbone=args.backbone, model=args.model, out=args.out,
        dev_data=args.dev_data, resume=args.resume, overwrite=args.overwrite,
        device=args.device, dtype=args.dtype, init=args.init, **_options(args, "align"),
    )
    _report(result)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from pe_core.training.plot import plot_run

    print(plot_run(args.run, args.output))
    return 0
