"""pe: turn any decoder LLM into a text embedder without touching its weights.

Example::

    import pe_core
    model = pe_core.load(backbone="qwen")
    vectors = model.encode(["hello"], instruction="Retrieve a passage that answers the question")
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
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
from pe_core.plugins.hookspecs import hookimpl  # noqa: F401

__version__ = "0.1.0"

# Modules that moved into sub-packages keep their old import paths (plugins and user code
# written against them still import): ``import pe_core.config`` gives the very module
# ``pe_core.model.config``, so there is one module object and one implementation.
MOVED = {
    **{f"pe_core.{name}": f"pe_core.model.{name}" for name in (
        "config", "prompting", "alignment", "encoder", "embedder", "layout", "pooling",
        "batching")},
    **{f"pe_core.{name}": f"pe_core.plugins.{name}" for name in (
        "hookspecs", "backbones", "resolvers", "publishers", "exporters")},
    **{f"pe_core.{name}": f"pe_core.checkpoints.{name}" for name in (
        "token_tables", "vocab_match")},
}


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: Any) -> None:
        pass  # already executed under its new name; importlib files it under the old one


if not any(isinstance(finder, _MovedModule) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModule())


def load(*args: Any, **kwargs: Any) -> Any:
    """Load a ready :class:`~pe_core.model.embedder.PromptEmbedder`; see
    :func:`pe_core.loading.load`."""
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
