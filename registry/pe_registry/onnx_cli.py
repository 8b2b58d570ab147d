"""``pe export onnx``: load an embedder and write one ONNX graph for one instruction.

Example::

    pe export onnx --alignment my-org/pe-align-gemma \\
        --instruction "Retrieve a passage that answers the question" --out onnx/ --int8
    python -c "from pe_registry import OnnxEmbedder as O; print(O('onnx/').encode(['hi']).shape)"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add ``export onnx`` to an ``argparse`` sub-parsers object (reusing an ``export``
    command another plugin may already have added)."""
    export = sub.choices.get("export") or sub.add_parser(
        "export", help="export an embedder to another runtime (onnx)"
    )
    formats = _subparsers(export)
    p = formats.add_parser(
        "onnx",
        help="one ONNX graph per (backbone, alignment, instruction), soft prompt baked in",
        description="Write model.onnx (token ids + attention mask -> normalised embedding, "
        "dynamic batch and length), tokenizer files and pe_config.json to --out. The "
        "Prompting LLM runs once, here: the graph holds the soft prompt as a constant.",
    )
    p.add_argument("--alignment", help="alignment: registry name, Hub repo or folder")
    p.add_argument("--backbone", help="backbone name (default: the alignment's)")
    p.add_argument("--model", help="backbone model: folder or Hub id[@revision]")
    p.add_argument("--prompting", help="Prompting LLM: folder or Hub id[@revision]")
    p.add_argument("--device", default="cpu", help="where to trace the model (default: cpu)")
    p.add_argument(
        "--instruction",
        help="the instruction to bake in (default: the config's document instruction)",
    )
    p.add_argument("--plain", action="store_true", help="no soft prompt: the plain backbone")
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--int8", action="store_true", help="also write a dynamic-int8 graph")
    p.add_argument(
        "--int8-max-drop", type=float, default=None, metavar="DROP",
        help="refuse the int8 graph when 1 - mean cosine of its embeddings to fp32's on a "
        "few real texts exceeds DROP (default: 0.01)",
    )
    p.add_argument("--force-int8", action="store_true",
                   help="write the int8 graph even above --int8-max-drop (with a warning)")
    p.add_argument(
        "--optimize", action=argparse.BooleanOptionalAction, default=True,
        help="fuse attention/RMSNorm/rotary into onnxruntime kernels and compute the last "
        "layer for the pooled row only (kept if parity holds; default: on). "
        "--no-optimize keeps the plain exported graph (standard ONNX ops only)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: the backbone plugin's)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument(
        "--no-verify", dest="verify", action="store_false",
        help="skip the parity check against PyTorch on a random padded batch",
    )
    p.set_defaults(func=run_export_onnx)


def _subparsers(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:  # argparse offers no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="format", metavar="FORMAT")


def run_export_onnx(args: argparse.Namespace) -> int:
    import pe_core
    from pe_core.errors import ConfigError
    from pe_core.loading import resolve_alignment
    from pe_core.model.config import EmbedderConfig
    from pe_core.validate import device
    from pe_registry.onnx_export import check_target, export_onnx, require_onnx_extra
    from pe_registry.onnx_int8 import INT8_MAX_DROP

    # before minutes of loading, not after
    require_onnx_extra()
    check_target(Path(args.out), args.overwrite)
    device(args.device)
    backbone = args.backbone
    if backbone is None:
        if args.alignment is None:
            raise ConfigError("pass --alignment (its config names the backbone) or --backbone")
        backbone = EmbedderConfig.load(resolve_alignment(args.alignment)).backbone
    print(f"loading the {backbone} embedder", file=sys.stderr, flush=True)
    embedder = pe_core.load(
        backbone=backbone, model=args.model, prompting=args.prompting,
        alignment=args.alignment, device=args.device, dtype="float32",
    )
    print(f"exporting to {args.out}", file=sys.stderr, flush=True)
    out = export_onnx(
        embedder, args.instruction, args.out, int8=args.int8, opset=args.opset,
        plain=args.plain, overwrite=args.overwrite, verify=args.verify,
        optimize=args.optimize, force_int8=args.force_int8,
        int8_max_drop=INT8_MAX_DROP if args.int8_max_drop is None else args.int8_max_drop,
    )
    from pe_registry.onnx_embedder import read_onnx_config

    _, info = read_onnx_config(out)
    parity = info.get("parity", {})
    print(f"wrote {out} ({', '.join(f'{k}: {v}' for k, v in info['files'].items())})")
    print(f"instruction: {info['instruction']!r}")
    if "fp32_max_abs_diff" in parity:
        print(f"parity with PyTorch: max |diff| {parity['fp32_max_abs_diff']:.1e}")
    if info.get("optimized"):
        print(f"fused for onnxruntime: {info['optimized']}")
    check = info.get("int8_check")
    if check:
        print(f"int8 vs fp32 on {check['texts']} real texts: cosine mean "
              f"{check['mean_cosine']:.4f}, min {check['min_cosine']:.4f} (drop "
              f"{check['drop']:.4f}, bound {check['max_drop']:g}"
              f"{', forced' if check['forced'] else ''})")
    return 0
