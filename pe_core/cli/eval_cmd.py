"""``pe eval``: ``mteb.evaluate`` on local or installed mteb tasks."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pe_core.cli.encode_cmd import add_model_args


def register(sub: Any) -> None:
    from pe_core.eval.names import LOCAL_TASK_NAMES, REAL_TASK_NAMES

    p = sub.add_parser("eval", help="evaluate with mteb on local or installed tasks")
    add_model_args(p)
    p.add_argument(
        "--tasks", nargs="+", default=list(LOCAL_TASK_NAMES),
        help=f"task names (default: {', '.join(LOCAL_TASK_NAMES)}; real text, data from "
        f"packages: {', '.join(REAL_TASK_NAMES)}; or installed mteb tasks)",
    )
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--results", help="mteb results folder (default: $MTEB_CACHE/results)")
    p.add_argument("--no-cache", action="store_true", help="write no results anywhere")
    p.add_argument("--no-prompt", action="store_true", help="the frozen backbone, no prompt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from pe_core import validate
    from pe_core.errors import DataError
    from pe_core.eval.mteb_env import prepare_mteb

    prepare_mteb()  # before anything imports mteb
    import pe_core
    from pe_core.eval.catalog import get_tasks
    from pe_core.eval.run import WithoutPrompt, evaluate

    # every argument checked before the model loads and the tasks run
    validate.batch_size(args.batch_size)
    validate.device(args.device)
    for task in get_tasks(args.tasks):
        if args.split not in task.metadata.eval_splits:
            raise DataError(f"task {task.metadata.name} has no split {args.split!r}: use one "
                            f"of {', '.join(task.metadata.eval_splits)}")
    if args.results is not None:
        validate.output_folder(args.results, "--results")

    model = pe_core.load(
        backbone=args.backbone, model=args.model, prompting=args.prompting,
        alignment=args.alignment, device=args.device, dtype=args.dtype,
        allow_untrained=args.allow_untrained,
    )
    cache = None if args.no_cache else Path(args.results or Path(os.environ["MTEB_CACHE"]))
    scores = evaluate(
        WithoutPrompt(model) if args.no_prompt else model, args.tasks, cache=cache,
        eval_splits=[args.split], batch_size=args.batch_size,
        name=f"pe/{args.backbone}-{Path(args.alignment or 'untrained').name}",
    )
    print(json.dumps(scores, indent=2))
    return 0
