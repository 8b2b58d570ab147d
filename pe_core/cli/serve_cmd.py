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
    from pe_core.serving.settings import API_KEY_ENV, LOOPBACK, ServeSettings

    d = ServeSettings()
    p = sub.add_parser("serve", help="serve embeddings over HTTP (OpenAI /v1/embeddings)")
    p.add_argument("--onnx", metavar="FOLDER",
                   help="an exported folder, or one whose sub-folders are (one graph each)")
    p.add_argument("--backend", choices=("torch", "onnx"),
                   help="default: onnx with --onnx, else torch")
    add_model_args(p, required=False)
    p.add_argument("--host", default=LOOPBACK, help=f"address to bind (default {LOOPBACK})")
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    p.add_argument("--name", default=d.model_name, help="model name clients send")
    p.add_argument("--api-key", help=f"require this bearer key (default: ${API_KEY_ENV})")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="texts per forward pass")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long the first request of a batch waits for more")
    p.add_argument("--no-batching", action="store_true", help="encode each request alone")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="texts waiting at most; beyond it requests get 429")
    p.add_argument("--max-inputs", type=int, default=d.max_inputs, help="texts per request")
    p.add_argument("--max-tokens", type=int,
                   help="tokens per text (default: the model's max_length)")
    p.add_argument("--truncate", action="store_true",
                   help="truncate longer texts instead of answering 413")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20,
                   help="request body size at most (413 above)")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout_s,
                   help="seconds before a request is answered 504")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    p.add_argument("--no-access-log", action="store_true",
                   help="no line per request (the metrics still count them)")
    p.set_defaults(func=run)


def loader(args: argparse.Namespace) -> Any:
    """The ``load()`` of the model the arguments name (checked before the server starts)."""
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
        return partial(load_onnx, args.name, args.onnx)
    if args.onnx:
        raise ConfigError("--onnx needs --backend onnx (or no --backend)")
    if not args.backbone:
        raise ConfigError("pass --backbone NAME (torch backend) or --onnx FOLDER")
    from pe_core.plugins import get_backbone

    get_backbone(args.backbone)  # installed? (names the plugin to install)
    return partial(load_torch, args.name, backbone=args.backbone, model=args.model,
                   prompting=args.prompting, alignment=args.alignment, device=args.device,
                   dtype=args.dtype, allow_untrained=args.allow_untrained)


def run(args: argparse.Namespace) -> int:
    from pe_core.serving.server import serve
    from pe_core.serving.settings import API_KEY_ENV, ServeSettings

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"pe serve needs its extra ({exc}): pip install 'pe-core[serve]'"
                          ) from exc
    settings = ServeSettings(
        host=args.host, port=args.port, model_name=args.name,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
        batching=not args.no_batching, max_queue=args.max_queue, max_inputs=args.max_inputs,
        max_tokens=args.max_tokens, truncate=args.truncate,
        max_body_bytes=int(args.max_body_mb * 2**20),
        request_timeout_s=args.request_timeout,
    )
    serve(loader(args), settings, args.log_level, access_log=not args.no_access_log)
    return 0
