"""``pe data build`` / ``pe data verify``: the local training mix (:mod:`pe_core.data.mix`)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    from pe_core.data.mix import SOURCES

    p = sub.add_parser("data", help="build or check the local training mix")
    verbs = p.add_subparsers(dest="data_command", metavar="VERB", required=True)
    b = verbs.add_parser("build", help="write train/dev/test JSONL from every local source")
    b.add_argument("--out", required=True, help="folder to write (replaced if it is a mix)")
    b.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES),
                   help=f"sources (default: all: {', '.join(SOURCES)})")
    b.add_argument("--negatives", type=int, default=1, help="hard negatives per pair")
    b.add_argument("--max-train", type=int, default=20000,
                   help="training pairs per source at most (a seeded sample; 0: all)")
    b.add_argument("--max-eval", type=int, default=0,
                   help="dev and test pairs per source at most (0: the whole split, as the "
                        "evaluation tasks score it)")
    b.add_argument("--dev-per-source", type=int, default=40,
                   help="pairs of each source in dev-sample.jsonl, the small dev set for "
                        "`pe train --dev-data` (default 40)")
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=run_build)
    v = verbs.add_parser("verify", help="check a built mix against its manifest's hashes")
    v.add_argument("folder")
    v.set_defaults(func=run_verify)


def run_build(args: argparse.Namespace) -> int:
    from pe_core.data.mix import build_mix
    from pe_core.errors import DataError

    for name in ("negatives", "max_train", "max_eval", "dev_per_source"):
        if getattr(args, name) < 0:
            raise DataError(f"--{name.replace('_', '-')} must be >= 0")
    manifest = build_mix(args.out, args.sources, negatives=args.negatives,
                         max_train=args.max_train or None, max_eval=args.max_eval or None,
                         dev_per_source=args.dev_per_source, seed=args.seed)
    print(json.dumps({"out": args.out, "sources": manifest["sources"]}, indent=2))
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from pe_core.data.mix import verify_mix

    manifest = verify_mix(args.folder)
    print(f"{args.folder}: {len(manifest['files'])} files match {', '.join(manifest['sources'])}")
    return 0
