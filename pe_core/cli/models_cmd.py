"""``pe models``: the model ids pe knows by name (default and real tiers), as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "models",
        help="model ids pe knows (pe-default:*, pe-real:*) as JSON: source, sha256, "
        "installed, cached",
    )
    p.set_defaults(func=run)


def default_rows() -> list[dict[str, Any]]:
    from pe_core.defaults import DEFAULT_NAMES, RECIPE_VERSION, read_meta
    from pe_core.defaults.shipped import shipped_folder

    return [
        {
            "id": f"pe-default:{name}", "tier": "default",
            "family": "prompting LLM" if name == "prompting" else name,
            "model": f"pe's toy {name} (recipe {RECIPE_VERSION}), built from local text",
            "packages": ["pe-core"], "file": None, "sha256": None, "license": "Apache-2.0",
            "opt_in": False, "installed": True,
            "shipped": shipped_folder(name) is not None,
            "cached": read_meta(name) is not None,
        }
        for name in DEFAULT_NAMES
    ]


def run(args: argparse.Namespace) -> int:
    from pe_core.checkpoints.real_tier import real_rows

    print(json.dumps(default_rows() + real_rows(), indent=2))
    return 0
