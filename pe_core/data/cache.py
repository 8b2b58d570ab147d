"""Where pe keeps what it builds locally (corpus, default models, eval scratch)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of pe's local cache: ``$PE_CACHE`` or the platform's user cache ``pe/``.

    Example::

        >>> import os; os.environ["PE_CACHE"] = "/tmp/pe-cache"
        >>> str(cache_dir())
        '/tmp/pe-cache'
    """
    override = os.environ.get("PE_CACHE")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("pe", appauthor=False))
