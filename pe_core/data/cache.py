"""Where pe keeps what it builds locally (corpus, default models, eval scratch)."""

from __future__ import annotations

import json
import os
import tempfile
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


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file, so readers never see
    half a file.

    Example::

        >>> write_json_atomic(cache_dir() / "x.json", {"a": 1})  # doctest: +SKIP
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
