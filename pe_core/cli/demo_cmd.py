"""``pe demo``: the end-to-end demo on the embedded default family."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="train, evaluate, transfer, publish and export, offline")
    p.add_argument("--out", default="pe-demo", help="working folder (default: ./pe-demo)")
    p.add_argument("--train-steps", type=int, default=120)
    p.add_argument("--lora-steps", type=int, default=60)
    p.add_argument("--align-steps", type=int, default=40)
    p.add_argument("--lora-lr", type=float, default=3e-3,
                   help="LoRA baseline lr (default 3e-3: picked on dev for the small defaults)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-publish", action="store_true", help="skip the local-registry push")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pe_core.demo import DemoSettings, run_demo
    from pe_core.validate import output_folder

    output_folder(args.out, "--out")
    run_demo(args.out, DemoSettings(
        train_steps=args.train_steps, lora_steps=args.lora_steps, align_steps=args.align_steps,
        lora_lr=args.lora_lr,
        batch_size=args.batch_size, max_length=args.max_length,
        publish=not args.no_publish, export=not args.no_export,
    ))
    return 0
