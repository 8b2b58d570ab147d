"""Summary → body pairs from the docstrings of every installed package (site-packages).

The same reading as the standard library's (:mod:`pe_core.data.stdlib_docs`: parsed with
:mod:`ast`, never imported), over the running interpreter's ``purelib``/``platlib``
folders. Large packages would otherwise fill the set with one library's vocabulary (torch
alone has thousands of documented functions), so each top-level package gives at most
``max_files`` files and ``max_pairs`` pairs, walked in sorted order so the result is the
same on every run of the same environment. pe's own packages are left out: its docstrings
describe the model being trained.
"""

from __future__ import annotations

import ast
import sysconfig
import warnings
from collections.abc import Iterator
from pathlib import Path

from pe_core.data.stdlib_docs import SKIP_DIRS, _docstrings, module_name, split_docstring

#: Not read: pe itself, and vendored copies of the standard library (they would put the
#: docstring task's test documents into training).
EXCLUDED = frozenset({"pe_core", "pe_registry", "pe_plugins", "_distutils_hack",
                      "setuptools", "pkg_resources", "pip", "typing_extensions", "six"})


def site_roots() -> list[Path]:
    """The interpreter's package folders (purelib, then platlib when it differs)."""
    paths = sysconfig.get_paths()
    roots = []
    for key in ("purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and root not in roots:
            roots.append(root)
    return roots


def _package_files(package: Path, max_files: int) -> list[Path]:
    files = []
    for path in sorted(package.rglob("*.py"), key=lambda p: p.as_posix()):
        parts = path.relative_to(package).parts
        if any(p in SKIP_DIRS or p.startswith(("_vendor", "vendored")) for p in parts[:-1]):
            continue
        files.append(path)
        if len(files) >= max_files:
            break
    return files


def iter_site_pairs(
    roots: list[Path] | None = None, max_files: int = 60, max_pairs: int = 150
) -> Iterator[tuple[str, str, str]]:
    """Yield ``(summary, body, "site:<module>.<qualname>")`` for installed packages.

    Example::

        >>> summary, body, source = next(iter_site_pairs())  # doctest: +SKIP
        >>> source.startswith("site:")
        True
    """
    for root in roots or site_roots():
        packages = sorted(p for p in root.iterdir()
                          if p.is_dir() and (p / "__init__.py").is_file()
                          and p.name not in EXCLUDED and not p.name.startswith("_"))
        for package in packages:
            kept = 0
            for path in _package_files(package, max_files):
                for pair in _file_pairs(path, root):
                    yield pair
                    kept += 1
                    if kept >= max_pairs:
                        break
                if kept >= max_pairs:
                    break


def _file_pairs(path: Path, root: Path) -> Iterator[tuple[str, str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return
    for name, doc in _docstrings(tree, module_name(path, root)):
        split = split_docstring(doc)
        if split is not None:
            yield split[0], split[1], f"site:{name}"
