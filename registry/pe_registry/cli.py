"""``pe push``, ``pe pull``, ``pe list``, ``pe remove``.

They are added to ``pe`` by the plugin hook; ``python -m pe_registry`` (or
``pe-registry``) runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def register(sub: Any) -> None:
    """Add the registry commands to an ``argparse`` sub-parsers object."""
    p = sub.add_parser(
        "push",
        help="publish an alignment / training run to the local registry or the Hub",
        description="Publish SOURCE (an artifact folder or a training run such as runs/llama). "
        "TO is name[@version] for the local registry (default: the folder's name) or "
        "org/name for the Hugging Face Hub (one commit; token from HF_TOKEN or `hf auth login`).",
    )
    p.add_argument("source", help="artifact folder or training run")
    p.add_argument("to", nargs="?", help="name[@version] or org/name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--local", nargs="?", const="", metavar="NAME",
                       help="into the local registry (the default), optionally as NAME")
    where.add_argument("--repo", metavar="ORG/NAME", help="to this Hugging Face Hub repo")
    p.add_argument("--private", action="store_true", default=None, help="new Hub repos are private")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("-m", "--message", help="Hub commit message")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_push)

    p = sub.add_parser(
        "pull",
        help="fetch an artifact (Hub revision pinned, hashes checked) and print its folder",
    )
    p.add_argument("ref", help="org/name[@revision] (Hub) or name[@version] (registry)")
    p.add_argument("--to", dest="dest", help="also copy it to this new folder")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_pull)

    p = sub.add_parser("list", help="artifacts in the local registry (or on the Hub with --hub)")
    p.add_argument("--hub", action="store_true", help="list pe alignments on the Hub instead")
    p.add_argument("--author", help="with --hub: only this user or organisation")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=run_list)

    p = sub.add_parser(
        "remove", help="delete a registry entry, all versions of a name, or pulled Hub copies"
    )
    p.add_argument("ref", help="name@version, name (all versions), org/name[@revision]")
    p.add_argument("--force", action="store_true", help="even if an alignment uses it")
    p.set_defaults(func=run_remove)

    # `pe export` (ONNX) is registered here by pe_registry.onnx_export when that module
    # exists; keep this the single place where registry commands are added.


def push_target(args: argparse.Namespace) -> str | None:
    """TO from the positional argument, ``--local [NAME]`` or ``--repo ORG/NAME``."""
    from pe_core.errors import ConfigError

    # an empty TO is a name given wrongly, not "no name": check_name refuses it later
    given = [t for t in (args.to, args.local or None, args.repo) if t is not None]
    if len(given) > 1:
        raise ConfigError(f"give the destination once, not {given}")
    if args.repo is not None and "/" not in args.repo:
        raise ConfigError(f"--repo takes org/name, got {args.repo!r}")
    if args.local and "/" in args.local:
        raise ConfigError(f"--local takes a registry name, got the Hub-like {args.local!r}")
    if args.to and args.local is not None and "/" in args.to:
        raise ConfigError("--local with a Hub repo destination: use --repo ORG/NAME")
    return given[0] if given else None


def run_push(args: argparse.Namespace) -> int:
    from pe_registry.api import push

    entry = push(args.source, push_target(args), private=args.private, token=args.token,
                 message=args.message)
    result = {"ref": entry.ref, "kind": entry.kind, "path": str(entry.path)}
    if entry.prompting is not None:
        result["prompting"] = entry.prompting.ref
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        if entry.prompting is not None:
            print(f"pushed {entry.prompting.ref} (prompting)")
        print(f"pushed {entry.ref}")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from pe_registry.api import pull

    path = pull(args.ref, args.dest, token=args.token)
    print(json.dumps({"ref": args.ref, "path": str(path)}) if args.json else path)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from pe_core.errors import ConfigError
    from pe_registry.api import list_artifacts, list_hub

    if args.author and not args.hub:
        raise ConfigError("--author filters the Hub listing: add --hub")
    rows = list_hub(args.author) if args.hub else list_artifacts()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.hub:
        print(_table(rows, ["ref", "backbone", "model_id", "last_modified"]))
    else:
        print(
            _table(
                [_display(r) for r in rows],
                ["name", "kind", "backbone", "model", "d_P→d_B", "K", "score", "created"],
            )
        )
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from pe_registry.api import remove

    for ref in remove(args.ref, force=args.force):
        print(f"removed {ref}")
    return 0


def _display(row: dict[str, Any]) -> dict[str, Any]:
    name = row["ref"]
    if "/" in name and "@" in name:  # Hub copies: a short commit is enough to read
        name = name[: name.index("@") + 13]
    if "error" in row:
        return {"name": name, "kind": "BROKEN", "backbone": row["error"][:60]}
    dims = f"{row['d_P']}→{row['d_B']}" if row.get("d_B") else f"{row['d_P']}"
    score = row.get("score")
    return {
        "name": name,
        "kind": row["kind"],
        "backbone": row.get("backbone") or "-",
        "model": row.get("model_id") or "-",
        "d_P→d_B": dims,
        "K": row.get("K"),
        "score": f"{score:.4f}" if isinstance(score, float) else "-",
        "created": row.get("created") or "-",
    }


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(nothing)"
    cells = [[str(r.get(c, "") if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pe-registry", description="pe artifact registry")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a registry command on its own (what ``pe push`` etc. do inside ``pe``)."""
    from pe_core.errors import PEError

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PEError as exc:
        print(f"pe: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
