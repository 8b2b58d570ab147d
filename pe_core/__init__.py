"""pe: turn any decoder LLM into a text embedder without touching its weights.

Example::

    import pe_core
    model = pe_core.load(backbone="qwen")
    vectors = model.encode(["hello"], instruction="Retrieve a passage that answers the question")
"""

from __future__ import annotations

from typing import Any

from pe_core.errors import (  # noqa: F401  (public API)
    ArgumentTypeError,
    ConfigError,
    CorruptFileError,
    DataError,
    DimensionMismatchError,
    DuplicateBackboneError,
    ExportError,
    MissingFileError,
    ModelTypeMismatchError,
    OfflineError,
    PathError,
    PEError,
    PluginError,
    RegistryError,
    RevisionNotFoundError,
    TrainingDivergedError,
    UnknownBackboneError,
)
from pe_core.hookspecs import hookimpl  # noqa: F401

__version__ = "0.1.0"


def load(*args: Any, **kwargs: Any) -> Any:
    """Load a ready :class:`~pe_core.embedder.PromptEmbedder`; see :func:`pe_core.loading.load`."""
    from pe_core.loading import load as _load

    return _load(*args, **kwargs)


def train(*args: Any, **kwargs: Any) -> Any:
    """Contrastive training; see :func:`pe_core.training.api.train`."""
    from pe_core.training.api import train as _train

    return _train(*args, **kwargs)


def align(*args: Any, **kwargs: Any) -> Any:
    """Alignment-only transfer; see :func:`pe_core.training.api.align`."""
    from pe_core.training.api import align as _align

    return _align(*args, **kwargs)
