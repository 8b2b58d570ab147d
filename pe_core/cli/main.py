"""Entry point of ``pe``: builds the argument parser and dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from pe_core.errors import PEError

# (module, register-function) pairs of the core's own sub-commands, imported lazily
CORE_COMMANDS = (
    "pe_core.cli.plugins_cmd",
    "pe_core.cli.models_cmd",
    "pe_core.cli.encode_cmd",
    "pe_core.cli.train_cmd",
    "pe_core.cli.eval_cmd",
    "pe_core.cli.demo_cmd",
    "pe_core.cli.serve_cmd",
    "pe_core.cli.data_cmd",
)


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit 2), like every other error of ``pe``; sub-command
    parsers are of the same class, so plugins' commands get it too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from pe_core.plugins import get_plugin_manager

    parser = Parser(
        prog="pe", description="Turn a decoder LLM into a text embedder (PromptEmbedder)."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in CORE_COMMANDS:
        importlib.import_module(name).register(sub)
    get_plugin_manager().hook.pe_register_commands(cli=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from pe_core import __version__

        print(__version__)
        return 0
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0
    try:
        code = int(func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except PEError as exc:
        print(f"pe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader closed the pipe (`pe list --json | head -1`): nothing left to say;
        # point stdout at devnull so the interpreter's final flush does not fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
