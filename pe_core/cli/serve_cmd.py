"""``pe serve``: OpenAI's ``/v1/embeddings`` over torch or onnxruntime (needs
``pip install 'pe-core[serve]'``)."""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Any

from pe_core.cli.encode_cmd import add_model_args
from pe_core.errors import ConfigError


def register(sub: Any) -> None:
    from pe_core.options import add_flags
    from pe_core.serving.settings import ServeSettings

    p = sub.add_parser("serve", help="serve embeddings over HTTP (OpenAI /v1/embeddings)")
    p.add_argument("--onnx", metavar="FOLDER",
                   help="an exported folder, or one whose sub-folders are (one graph each)")
    p.add_argument("--backend", choices=("torch", "onnx"),
                   help="default: onnx with --onnx, else torch")
    add_model_args(p, required=False)
    add_flags(p, (ServeSettings,), "serve")
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Any:
    """The :class:`ServeSettings` the flags give (the API key from the environment when
    no flag names one)."""
    from pe_core.options import flag_values
    from pe_core.serving.settings import API_KEY_ENV, ServeSettings

    values = flag_values(args, (ServeSettings,), "serve")
    if values.get("api_key") is None:
        values["api_key"] = os.environ.get(API_KEY_ENV) or None
    return ServeSettings(**values)


def loader(args: argparse.Namespace, name: str) -> Any:
    """The ``load()`` of the model the arguments name, served as ``name`` (checked before
    the server starts)."""
    from pe_core.serving.backends import load_onnx, load_torch, onnx_folders

    backend = args.backend or ("onnx" if args.onnx else "torch")
    if backend == "onnx":
        if not args.onnx:
            raise ConfigError("--backend onnx serves an exported folder: pass --onnx FOLDER "
                              "(make one with `pe export onnx`)")
        if args.backbone or args.model or args.prompting or args.alignment:
            raise ConfigError("--onnx serves an exported folder as it is: drop --backbone, "
                              "--model, --prompting and --alignment")
        from pe_core.plugins import get_plugin_manager

        onnx_folders(args.onnx)
        get_plugin_manager().exporters().get("onnx")  # installed? (says what to install)
        return partial(load_onnx, name, args.onnx)
    if args.onnx:
        raise ConfigError("--onnx needs --backend onnx (or no --backend)")
    if not args.backbone:
        raise ConfigError("pass --backbone NAME (torch backend) or --onnx FOLDER")
    from pe_core.plugins import get_backbone

    get_backbone(args.backbone)  # installed? (names the plugin to install)
    return partial(load_torch, name, backbone=args.backbone, model=args.model,
                   prompting=args.prompting, alignment=args.alignment, device=args.device,
                   dtype=args.dtype, allow_untrained=args.allow_untrained)


def run(args: argparse.Namespace) -> int:
    from pe_core.serving.server import serve

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"pe serve needs its extra ({exc}): pip install 'pe-core[serve]'"
                          ) from exc
    settings = settings_from(args)
    serve(loader(args, settings.model_name), settings)
    return 0
