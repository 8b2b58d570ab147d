"""mkdocs hook: the benchmark record pages (``docs/benchmarks/results/``) are rendered
from ``benchmarks/results/`` before every build.

The records are the only copy of a result; rendering at build time keeps the pages equal
to them without committing a second copy. Files are rewritten only when they change, so
``mkdocs serve`` does not rebuild in a loop; a JSON file there that is no record fails
the build (``benchmarks.harness.NotARecord``).
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def on_pre_build(config, **kwargs) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.harness import RESULTS
    from benchmarks.render import OUT, render_all

    render_all(RESULTS, OUT)
