"""One check per user-given quantity, shared by every entry point (``encode`` of each
embedder, the CLI, training): the same wrong value fails the same way everywhere, with
a typed error that says what to pass instead, before any work starts.

Example::

    from pe_core import validate
    validate.batch_size(32)          # 32
    validate.batch_size("8")         # ArgumentTypeError: batch_size must be an integer ...
    validate.learning_rate(float("nan"), "lr")   # ConfigError
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pe_core.errors import ArgumentTypeError, ConfigError, DataError, MissingFileError, PathError

CONVERT_TO = ("numpy", "torch")
# sentence-transformers' quantize_embeddings precisions
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True as a batch size is a mistake, not a 1
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` of at least ``minimum`` (no bools, floats or strings).

    Example::

        integer(3, "steps")  # 3
    """
    if not _is_int(value):
        raise ArgumentTypeError(
            f"{name} must be an integer >= {minimum}, got {type_name(value)} {value!r:.60}"
        )
    if int(value) < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def batch_size(value: Any) -> int:
    """Texts per batch: an integer >= 1."""
    return integer(value, "batch_size")


def max_length(value: Any, limit: int | None = None, what: str = "the backbone") -> int | None:
    """Tokens per text: None (the model's default) or an integer >= 1 and at most
    ``limit``, the positions ``what`` has room for (texts longer than ``max_length``
    are truncated with a warning; a ``max_length`` the model cannot read is an error).

    Example::

        max_length(128, limit=507)  # 128
    """
    if value is None:
        return None
    n = integer(value, "max_length")
    if limit is not None and n > limit:
        raise ConfigError(
            f"max_length={n} is more than {what} can read ({limit} text tokens): pass "
            f"max_length <= {limit}"
        )
    return n


def learning_rate(value: Any, name: str = "lr") -> float:
    """A finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be a number > 0, got {type_name(value)} "
                                f"{value!r:.60}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


def type_name(value: Any) -> str:
    """The type of ``value`` as a user can recognise it: ``int``, but ``numpy.int64``
    (numpy 2 calls its bool ``bool``, so a bare name would read "expected bool, got bool")."""
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__.partition('.')[0]}.{kind.__qualname__}"


def flag(value: Any, name: str) -> bool:
    """A bool or numpy bool (``normalize="no"`` is a mistake, not True)."""
    if not isinstance(value, bool | np.bool_):
        raise ArgumentTypeError(f"{name} must be True or False, got {type_name(value)} "
                                f"{value!r:.60}")
    return bool(value)


def optional_flag(value: Any, name: str) -> bool | None:
    return None if value is None else flag(value, name)


def convert_to(value: Any) -> str:
    if not isinstance(value, str) or value not in CONVERT_TO:
        raise ConfigError(f"convert_to must be 'numpy' or 'torch', got {value!r}")
    return value


def unicode_text(value: str, name: str) -> str:
    """``value`` if it is valid Unicode: a lone surrogate (``"\\ud800"``, what a
    broken JSON escape or ``errors="surrogateescape"`` leaves) cannot be tokenised or
    written as UTF-8, so it is refused here, naming where it is."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ArgumentTypeError(
            f"{name} holds a lone surrogate {value[exc.start]!r} at character {exc.start}, "
            "which is not valid Unicode text: fix the source, or clean it with "
            "text.encode('utf-8', 'replace').decode()"
        ) from None
    return value


def instruction(value: Any, name: str = "instruction") -> str | None:
    """None (the model's default) or one string: a list would embed its repr."""
    if value is not None and not isinstance(value, str):
        raise ArgumentTypeError(
            f"{name} must be a string or None, got {type_name(value)} {value!r:.60}; "
            "encode texts with different instructions in separate calls"
        )
    return None if value is None else unicode_text(value, name)


def texts(value: Any) -> tuple[list[str], bool]:
    """``(texts, single)``: one string is one text (``single``); otherwise a list, tuple
    or other ordered iterable of strings. Mappings, bytes and nested lists are refused:
    they would embed keys, a repr, or be read as pre-tokenised input.

    Example::

        texts("hello")          # (["hello"], True)
        texts(["a", "b"])       # (["a", "b"], False)
    """
    if isinstance(value, str):
        return [unicode_text(value, "texts[0]")], True
    if value is None or isinstance(value, bytes | bytearray | Mapping | set | frozenset) or (
        not isinstance(value, Iterable)
    ):
        raise ArgumentTypeError(
            f"texts must be a string or a list of strings, got {type_name(value)}"
            + ("" if value is None else f" {value!r:.60}")
        )
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ArgumentTypeError(
                f"texts[{i}] is {type_name(item)} {item!r:.60}, not a string: pass "
                "text (decode bytes, str() numbers, join pre-tokenised words)"
            )
        unicode_text(item, f"texts[{i}]")
    return items, False


@dataclass(frozen=True)
class EncodeArgs:
    """The arguments of ``encode`` after checking (same for every embedder):
    sentence-transformers' names resolved, the instruction chosen."""

    texts: list[str]
    single: bool
    instruction: str | None  # the soft prompt's instruction (None: no soft prompt)
    batch_size: int
    normalize: bool
    convert_to: str
    show_progress_bar: bool | None
    max_length: int | None  # checked against the positions by the caller (see max_length)
    truncate_dim: int | None
    precision: str
    ranges: np.ndarray | None = None  # int8/uint8 bucket ranges (2, width), as given


def encode_args(
    texts_: Any, instruction_: Any = None, *, prompt_name: Any = None, prompt: Any = None,
    prompts: Mapping[str, str] | None = None, default_prompt_name: str | None = None,
    default_instruction: str | None = None, batch_size_: Any = 32, normalize: Any = None,
    normalize_embeddings: Any = None, convert_to_: Any = None, convert_to_numpy: Any = None,
    convert_to_tensor: Any = None, show_progress_bar: Any = None, max_length_: Any = None,
    truncate_dim_: Any = None, precision_: Any = "float32", ranges_: Any = None,
    width: int | None = None,
) -> EncodeArgs:
    """Check every argument of ``encode`` at once, before any model runs. ``prompts``,
    ``default_prompt_name`` and ``default_instruction`` are the model's; ``width`` is
    its embedding dimension (the bound of ``truncate_dim``)."""
    items, single = texts(texts_)
    cut = truncate_dim(truncate_dim_, width)
    kind = precision(precision_)
    return EncodeArgs(
        items, single,
        chosen_instruction(instruction_, prompt, prompt_name, prompts or {},
                           default_prompt_name, default_instruction),
        batch_size(batch_size_),
        _agreeing("normalisation", {
            "normalize": (normalize, optional_flag(normalize, "normalize")),
            "normalize_embeddings": (normalize_embeddings, optional_flag(
                normalize_embeddings, "normalize_embeddings")),
        }, True),
        _agreeing("the output type", {
            "convert_to": (convert_to_, None if convert_to_ is None else convert_to(convert_to_)),
            "convert_to_numpy": (convert_to_numpy, _form(convert_to_numpy, "convert_to_numpy",
                                                         "numpy", "torch")),
            "convert_to_tensor": (convert_to_tensor, _form(convert_to_tensor, "convert_to_tensor",
                                                           "torch", "numpy")),
        }, "numpy"),
        optional_flag(show_progress_bar, "show_progress_bar"),
        None if max_length_ is None else integer(max_length_, "max_length"),
        cut, kind, quantization_ranges(ranges_, kind, cut or width, len(items)),
    )


def chosen_instruction(
    instruction_: Any, prompt: Any, prompt_name: Any, prompts: Mapping[str, str],
    default_prompt_name: str | None, default: str | None,
) -> str | None:
    """The instruction ``encode`` makes its soft prompt from: ``instruction``, or
    ``prompt`` (an instruction text, sentence-transformers' name), or the model's prompt
    named ``prompt_name``; with none of them, the prompt ``default_prompt_name`` names,
    else ``default``. A prompt text of "" means no soft prompt (as in
    sentence-transformers, where "" prepends nothing)."""
    given = [name for name, value in (("instruction", instruction_), ("prompt", prompt),
                                      ("prompt_name", prompt_name)) if value is not None]
    if len(given) > 1:
        raise ConfigError(
            f"pass one of instruction, prompt or prompt_name, not {' and '.join(given)}: "
            "prompt is an instruction text (the same as instruction), prompt_name names one "
            "of the model's prompts"
        )
    if instruction_ is not None:
        return instruction(instruction_)
    if prompt is not None:
        return instruction(prompt, "prompt") or None
    name = default_prompt_name if prompt_name is None else prompt_name
    if name is None:
        return default
    if not isinstance(name, str):
        raise ArgumentTypeError(f"prompt_name must be a string, got {type_name(name)} "
                                f"{name!r:.60}")
    if name not in prompts:
        raise ConfigError(
            f"unknown prompt_name {name!r}: this model's prompts are {sorted(prompts)} "
            "(or pass the instruction itself as instruction=...)"
        )
    return prompts[name] or None


def _form(value: Any, name: str, if_true: str, if_false: str) -> str | None:
    return None if value is None else (if_true if flag(value, name) else if_false)


def _agreeing(what: str, given: dict[str, tuple[Any, Any]], default: Any) -> Any:
    """The one meaning the keywords in ``given`` (name -> (as passed, meaning), None for
    not passed) agree on: pe's own name and sentence-transformers' spellings of it; with
    none passed, ``default``."""
    passed = {name: pair for name, pair in given.items() if pair[1] is not None}
    if len({meaning for _, meaning in passed.values()}) > 1:
        said = ", ".join(f"{name}={value!r}" for name, (value, _) in passed.items())
        raise ConfigError(f"{said} disagree on {what}: pass one of them")
    return next((meaning for _, meaning in passed.values()), default)


def truncate_dim(value: Any, width: int | None, name: str = "truncate_dim") -> int | None:
    """None (the full width) or a number of leading dimensions to keep, 1 to ``width``."""
    if value is None:
        return None
    n = integer(value, name)
    if width is not None and n > width:
        raise ConfigError(f"truncate_dim={n} is more than the model's {width} dimensions: "
                          f"pass 1 to {width}, or None for all")
    return n


def quantization_ranges(value: Any, kind: str, width: int | None, n: int) -> np.ndarray | None:
    """The ``(2, width)`` per-dimension minimum and maximum int8/uint8 buckets span (as
    sentence-transformers' ``ranges``); None takes them from the vectors of the call,
    which one vector cannot give (every dimension would be one value: an all -128 int8
    vector), so that is refused."""
    if value is None:
        if kind in ("int8", "uint8") and n == 1:
            raise ConfigError(
                f"precision={kind!r} takes its ranges from the vectors of the call, and one "
                "vector has none: encode many texts at once, or pass ranges= (2, dim) "
                "from a calibration set, e.g. np.stack([vecs.min(0), vecs.max(0)])"
            )
        return None
    if kind not in ("int8", "uint8"):
        raise ConfigError(f"ranges only applies to precision 'int8' or 'uint8', not {kind!r}")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"ranges must be a (2, dim) array of numbers, got "
                                f"{type_name(value)}") from None
    if array.ndim != 2 or array.shape[0] != 2 or (width is not None and array.shape[1] != width):
        raise ConfigError(f"ranges must have shape (2, {width or 'dim'}) (minimum and maximum "
                          f"of each output dimension), got {array.shape}")
    if not np.isfinite(array).all() or (array[1] < array[0]).any():
        raise ConfigError("ranges must be finite, with ranges[1] >= ranges[0] in every "
                          "dimension")
    return array


def precision(value: Any) -> str:
    """One of :data:`PRECISIONS`, as sentence-transformers' ``quantize_embeddings``."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"precision must be a string, got {type_name(value)} "
                                f"{value!r:.60}")
    if value not in PRECISIONS:
        raise ConfigError(f"unknown precision {value!r}: use one of {', '.join(PRECISIONS)}")
    return value


def text_limit(requested: int | None, default: int, limit: int | None) -> int:
    """Tokens a text may keep: ``requested`` (already checked against ``limit``), else
    the config's ``default`` lowered to ``limit``, so a default never reads past the
    model's positions (texts cut there get the truncation warning)."""
    if requested is not None:
        return requested
    return default if limit is None else max(1, min(default, limit))


_DEVICE = re.compile(r"^(cpu|mps|meta|(cuda|xpu)(:\d+)?)$")


def device(value: Any) -> str | None:
    """None (CUDA if available, else CPU) or a device this machine has: ``cpu``,
    ``cuda``, ``cuda:N`` (N below the number of GPUs), ``mps``.

    Example::

        device("cpu")  # "cpu"
    """
    if value is None:
        return None
    if type(value).__name__ == "device" and type(value).__module__ == "torch":
        value = str(value)
    if not isinstance(value, str):
        raise ArgumentTypeError(
            f"device must be a string such as 'cpu' or 'cuda:0', got {type(value).__name__} "
            f"{value!r:.60}"
        )
    if not _DEVICE.match(value):
        raise ConfigError(f"unknown device {value!r}: use cpu, cuda, cuda:N or mps")
    import torch

    kind, _, index = value.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {value!r}: this machine has no CUDA GPU; use cpu")
        if index and int(index) >= count:
            raise ConfigError(
                f"device {value!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}"
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' is not available on this machine; use cpu")
    return value


# -- paths ------------------------------------------------------------------------------
def input_file(path: str | Path, what: str = "input") -> Path:
    """An existing, readable regular file."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{what} file {path} does not exist: check the path")
    if path.is_dir():
        raise PathError(f"{what} {path} is a folder, not a file: name a file inside it")
    if not os.access(path, os.R_OK):
        raise PathError(f"{what} file {path} is not readable: check its permissions")
    return path


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text from ``data``; binary data or another encoding is a :class:`DataError`
    naming the line."""
    if b"\x00" in data:
        raise DataError(f"{where} is a binary file, not text: pass a UTF-8 text or JSONL file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{where}:{line} is not UTF-8 (byte {data[exc.start]:#04x}): convert the file, "
            f"e.g. iconv -f latin1 -t utf-8 {where}"
        ) from None


def read_text_file(path: str | Path, what: str = "input") -> str:
    """The UTF-8 text of an input file, checked by :func:`input_file`."""
    path = input_file(path, what)
    return decode_text(path.read_bytes(), str(path))


def output_file(path: str | Path, what: str = "output") -> Path:
    """A path a file can be written to, checked before the work that fills it: not a
    folder, no regular file among its parents, and the nearest existing parent writable.
    Creates nothing."""
    path = Path(path)
    if path.is_dir():
        raise PathError(f"{what} {path} is a folder: name a file, e.g. {path / 'out'}")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise PathError(
            f"{what} {path} cannot be created: {parent} is a file, not a folder; "
            "choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path,
                                                                                     os.W_OK)):
        raise PathError(f"{what} {path} is not writable here ({parent}): choose another path")
    return path


def output_folder(path: str | Path, what: str = "output folder") -> Path:
    """A folder that exists or can be created, and is writable; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a folder: choose another path")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise PathError(f"{what} {path} is not writable: choose another path")
        return path
    output_file(path, what)
    return path
