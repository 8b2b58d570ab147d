"""``python -m pe_core.zoo add RUN NAME``: make zoo entry ``NAME`` from a ``pe train`` run.

Copies what loading needs and what documents the run (not ``checkpoints/``), keeps or
starts the model card, and writes ``pe_manifest.json`` last, over the final files.
``--root`` writes elsewhere than the zoo ``pe_core.zoo.root()`` names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pe_core.errors import PEError
from pe_core.zoo.build import make_entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pe_core.zoo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="make a zoo entry from a pe train run folder")
    add.add_argument("run", type=Path)
    add.add_argument("name")
    add.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        folder = make_entry(args.run, args.name, args.root)
    except PEError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(json.dumps({"entry": str(folder), "bytes": size}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
