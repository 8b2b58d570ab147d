"""mkdocs hook: the Errors page's table is generated from ``pe_core/errors.py``.

The list of errors used to be written by hand and drifted (three classes were listed
twice, new ones were missing). Parsing the module with ``ast`` keeps the page equal to
the code without importing pe_core (the docs build needs no torch).
"""

from __future__ import annotations

import ast
import pathlib

MARKER = "<!-- errors-table -->"
SOURCE = pathlib.Path(__file__).resolve().parents[2] / "pe_core" / "errors.py"


def _name(node: ast.expr) -> str:
    return ast.unparse(node)


def _rows() -> list[str]:
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    known: set[str] = {"PEError"}
    rows = ["| error | derives from | raised when |", "|---|---|---|"]
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [_name(b) for b in node.bases]
        if node.name != "PEError" and not known.intersection(bases):
            continue
        known.add(node.name)
        doc = " ".join((ast.get_docstring(node) or "").split())
        if not doc:
            raise ValueError(f"{SOURCE}: {node.name} has no docstring; the Errors page needs one")
        also = ", ".join(f"`{b}`" for b in bases) or "`Exception`"
        anchor = f'<a id="{node.name.lower()}"></a>'
        cell = doc.replace("|", "\\|")
        rows.append(f"| {anchor}`{node.name}` | {also} | {cell} |")
    return rows


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (mkdocs API)
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, "\n".join(_rows()))
