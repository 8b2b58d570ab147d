"""``pe plugins`` and ``pe backbones``: what is installed, as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("plugins", help="installed plugins as JSON (with load errors)")
    p.set_defaults(func=run_plugins)
    b = sub.add_parser("backbones", help="registered backbones as JSON")
    b.set_defaults(func=run_backbones)


def run_plugins(args: argparse.Namespace) -> int:
    from pe_core.plugins import get_plugin_manager

    print(json.dumps([i.as_dict() for i in get_plugin_manager().infos()], indent=2))
    return 0


def run_backbones(args: argparse.Namespace) -> int:
    from pe_core.plugins import get_plugin_manager

    rows = [
        {
            "name": s.name,
            "model_types": list(s.model_types),
            "default_model": s.default_model,
            "distribution": s.distribution,
            "padding_side": s.padding_side,
            "pooling": s.pooling,
        }
        for s in get_plugin_manager().backbones()
    ]
    print(json.dumps(rows, indent=2))
    return 0
