"""The size/perplexity table of the default models, for the docs (docs/loading.md) and
``--help`` texts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pe_core.defaults.lookup import read_meta
from pe_core.defaults.recipes import DEFAULT_NAMES

COLUMNS = (
    ("name", "model"),
    ("config_class", "architecture"),
    ("hidden_size", "width"),
    ("num_hidden_layers", "layers"),
    ("vocab_size", "vocab"),
    ("parameters", "params"),
    ("size_mb", "size (MB)"),
    ("dev_perplexity", "dev ppl"),
    ("dev_bits_per_byte", "dev bits/byte"),
    ("build_seconds", "build (s)"),
)


def default_table(
    *, tiny: bool | None = None, names: Sequence[str] = DEFAULT_NAMES
) -> list[dict[str, Any]]:
    """One row per *built* default model (unbuilt ones are skipped; nothing is built here).

    Example::

        >>> rows = default_table()
        >>> [r["name"] for r in rows]  # doctest: +SKIP
        ['prompting', 'llama', 'mistral', 'qwen', 'gemma']
    """
    rows = []
    for name in names:
        meta = read_meta(name, tiny=tiny)
        if meta is None:
            continue
        row = {key: meta.get(key) for key, _ in COLUMNS}
        row["size_mb"] = round(meta["size_bytes"] / 1e6, 2)
        rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render :func:`default_table` rows as a Markdown table."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for k, _ in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])
