"""Typed errors. Every failure a user can cause raises a subclass of :class:`PEError`
whose message says what to do next."""

from __future__ import annotations


class PEError(Exception):
    """Base class of every error pe raises on purpose."""


class UnknownBackboneError(PEError, KeyError):
    """No installed plugin registers the requested backbone name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateBackboneError(PEError, ValueError):
    """Two plugins register the same backbone name."""


class PluginError(PEError, RuntimeError):
    """A plugin could not be loaded or broke the hook contract."""


class PluginSpecError(PluginError, ValueError):
    """A plugin registered something malformed (a bad backbone spec, an exporter twice)."""


class ModelTypeMismatchError(PEError, ValueError):
    """A checkpoint's ``model_type`` is not handled by the chosen backbone plugin."""


class WeightsMismatchError(PEError, ValueError):
    """A checkpoint's tensors are not the parameters of the model built from its config
    (missing, unexpected or shape-mismatched weights)."""


class MissingExtraError(PEError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class UnknownModelError(PEError, KeyError):
    """A ``pe-default:`` or ``pe-real:`` id that pe does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DimensionMismatchError(PEError, ValueError):
    """An alignment's ``d_P``/``d_B`` does not match the models it is used with."""


class CorruptFileError(PEError, OSError):
    """A weights file is truncated, corrupt or fails its hash check."""


class NonFiniteWeightsError(CorruptFileError):
    """Weights hold NaN or inf values (a diverged run or a damaged file)."""


class UntrainedModelError(PEError, LookupError):
    """No trained alignment exists for a real backbone and the untrained one was not
    asked for: it would rank below the frozen backbone itself."""


class MissingFileError(PEError, FileNotFoundError):
    """A model/artifact folder lacks a file it needs."""


class ConfigError(PEError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataError(PEError, ValueError):
    """Training or evaluation data is empty or malformed."""


class TrainingDivergedError(PEError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RegistryError(PEError, RuntimeError):
    """An alignment registry operation failed; the registry is left unchanged."""


class RevisionNotFoundError(RegistryError, LookupError):
    """The requested revision of a repository does not exist."""


class OfflineError(RegistryError, ConnectionError):
    """The Hub cannot be reached (offline mode or no network) and nothing is cached."""


class ExportError(PEError, RuntimeError):
    """ONNX export failed or produced a graph that does not match PyTorch."""


class ArgumentTypeError(PEError, TypeError):
    """An argument of the wrong type (``encode(None)``, ``batch_size="8"``)."""


class PathError(PEError, OSError):
    """A path cannot be used as given: a folder where a file is expected, a file among
    an output's parents, no permission."""


class RequestError(PEError, ValueError):
    """A request to ``pe serve`` cannot be answered; ``status`` is its HTTP status and
    ``type``/``code`` fill OpenAI's error body."""

    def __init__(
        self, message: str, status: int = 400, type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.code = status, type, code


class Int8DropError(ExportError):
    """The int8 graph embeds real text too far from the fp32 graph (above the bound)."""


class NonFiniteOutputError(PEError, FloatingPointError):
    """A model produced NaN or inf embeddings (non-finite weights, or a dtype too narrow
    for its activations); no vector is handed back."""
