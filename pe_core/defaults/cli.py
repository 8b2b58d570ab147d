"""``python -m pe_core.defaults [--tiny] [--force] [--ship] [NAME ...]``: build the default
models (all, or the named ones), print their size/perplexity table; ``--ship`` copies the
builds into the package (:mod:`pe_core.defaults.shipped`)."""

from __future__ import annotations

import argparse
import sys
import time

from pe_core.data import load_corpus
from pe_core.defaults.lookup import ensure_default
from pe_core.defaults.recipes import DEFAULT_NAMES
from pe_core.defaults.shipped import ship
from pe_core.defaults.table import default_table, format_table
from pe_core.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status.

    Example::

        >>> main(["--tiny", "qwen"])  # doctest: +SKIP
        0
    """
    parser = argparse.ArgumentParser(
        prog="python -m pe_core.defaults",
        description="Build pe's default models (tokenizers + small causal LMs) from local text.",
    )
    parser.add_argument(
        "names", nargs="*", help=f"models to build (default: all of {DEFAULT_NAMES})"
    )
    parser.add_argument("--tiny", action="store_true", help="the seconds-to-build test variants")
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    parser.add_argument(
        "--ship", action="store_true",
        help="copy this machine's builds into the package (float16 weights), for release",
    )
    args = parser.parse_args(argv)
    names = args.names or list(DEFAULT_NAMES)
    unknown = [n for n in names if n not in DEFAULT_NAMES]
    if unknown:
        raise ConfigError(f"unknown default model(s) {unknown}; choose from {DEFAULT_NAMES}")
    started = time.perf_counter()
    load_corpus()
    for name in names:
        path = ensure_default(name, tiny=args.tiny, rebuild=args.force)
        if args.ship:
            if args.tiny:
                raise ConfigError("--ship is for the full-size models, not --tiny")
            path = ship(name, path)
        print(f"{name}: {path}", file=sys.stderr)
    print(format_table(default_table(tiny=args.tiny, names=names)))
    print(f"\ntotal {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
