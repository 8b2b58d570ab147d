"""Summary → body pairs from the docstrings of Python's standard library.

The sources are parsed with :mod:`ast`, never imported: importing every stdlib module is slow,
has side effects (``antigravity`` opens a browser, ``this`` prints) and depends on optional C
extensions. Parsing reads exactly the text that ships with the interpreter.
"""

from __future__ import annotations

import ast
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from pe_core.data.text import squash

# Folders whose docstrings are tests, generated boilerplate or third-party code.
SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "encodings",  # generated codec modules: hundreds of identical docstrings
        "pydoc_data",
        "__pycache__",
    }
)

_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_root() -> Path:
    """The folder holding the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path | None = None) -> list[Path]:
    """Every stdlib ``.py`` file worth reading, sorted so the walk is deterministic."""
    root = root or stdlib_root()
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith("config-") for p in parts[:-1]):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def split_docstring(doc: str) -> tuple[str, str] | None:
    """``(summary, body)``: the first paragraph, and the rest with one paragraph per line.

    Doctest paragraphs are dropped from the body: they are code, not prose about the object.

    Example::

        >>> split_docstring("Return the sum.\\n\\nBoth numbers must be finite.")
        ('Return the sum.', 'Both numbers must be finite.')
    """
    paragraphs = [p for p in (para.strip() for para in doc.split("\n\n")) if p]
    if len(paragraphs) < 2:
        return None
    summary = squash(paragraphs[0])
    body = [squash(p) for p in paragraphs[1:] if not p.lstrip().startswith(">>>")]
    body = [p for p in body if p]
    if not body:
        return None
    return summary, "\n".join(body)


def _docstrings(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """``(qualified name, docstring)`` for the module and every class/function inside it."""
    stack: list[tuple[ast.AST, str]] = [(tree, module)]
    while stack:
        node, name = stack.pop()
        doc = ast.get_docstring(node, clean=True) if isinstance(node, _DOC_NODES) else None
        if doc:
            yield name, doc
        children = [c for c in ast.iter_child_nodes(node) if isinstance(c, _DOC_NODES[1:])]
        # reversed so the stack pops them in source order
        stack.extend((c, f"{name}.{c.name}") for c in reversed(children))


def iter_stdlib_pairs(root: Path | None = None) -> Iterator[tuple[str, str, str]]:
    """Yield ``(summary, body, source)`` for every stdlib docstring with a summary and a body.

    ``source`` is ``"stdlib:<module>.<qualname>"``.

    Example::

        >>> summary, body, source = next(iter_stdlib_pairs())
        >>> source.startswith("stdlib:")
        True
    """
    root = root or stdlib_root()
    for path in source_files(root):
        try:
            text = path.read_text(encoding="utf-8")
            with warnings.catch_warnings():
                # old modules contain invalid escape sequences; they still parse
                warnings.simplefilter("ignore")
                tree = ast.parse(text, filename=str(path))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for name, doc in _docstrings(tree, module_name(path, root)):
            split = split_docstring(doc)
            if split is not None:
                yield split[0], split[1], f"stdlib:{name}"
