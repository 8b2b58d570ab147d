"""Optional dependencies: a missing one is a :class:`MissingExtraError` naming the extra
to install, raised before any work starts (not a ModuleNotFoundError half-way)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from pe_core.errors import MissingExtraError


def require_extra(modules: Sequence[str], extra: str, purpose: str) -> None:
    """Raise unless every module in ``modules`` is importable.

    Example::

        require_extra(["mteb"], "pe-core[eval]", "pe eval")
        # MissingExtraError: pe eval needs mteb: pip install 'pe-core[eval]'
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{purpose} needs {' and '.join(missing)}: pip install '{extra}'"
        )
