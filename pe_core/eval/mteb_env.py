"""Point mteb at pe's cache before it is imported (mteb creates its cache dir at import)."""

from __future__ import annotations

import os


def prepare_mteb() -> None:
    """Set ``MTEB_CACHE`` to ``<pe cache>/mteb`` unless the user chose one. Idempotent.
    Without the eval extra installed, a :class:`MissingExtraError` says to install it.

    Example::

        >>> prepare_mteb(); import mteb  # mteb's cache now lives under pe's cache
    """
    from pe_core.extras import require_extra

    require_extra(["mteb", "datasets"], "pe-core[eval]", "evaluation (pe eval)")
    if "MTEB_CACHE" not in os.environ:
        from pe_core.data.cache import cache_dir

        os.environ["MTEB_CACHE"] = str(cache_dir() / "mteb")
