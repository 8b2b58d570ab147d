"""What a server holds: one named model made of encoders, each reached by instruction.

The torch backend is one :class:`~pe_core.model.embedder.PromptEmbedder` that serves any
instruction (its soft prompt is computed once per instruction and cached). The ONNX
backend is one or more exported folders, each with its instruction baked into the graph,
loaded through pe-core's exporter registry (pe-registry registers ``onnx``), so pe-core
never imports pe-registry.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, MissingFileError, RequestError
from pe_core.model.config import CONFIG_NAME

ANY_INSTRUCTION = object()  # key of an encoder that takes whatever instruction it is given


@dataclass
class Route:
    """Where one request's texts go: an encoder and the instruction to pass it."""

    encoder: Any
    instruction: str | None
    counter: Any  # a tokenizer copy that only the event loop uses (see count_tokens)
    max_length: int

    @property
    def key(self) -> tuple[int, str | None]:
        """Requests with equal keys are encoded together."""
        return id(self.encoder), self.instruction

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as ``encode`` sees them (special tokens included, untruncated).

        A separate tokenizer copy is used because a fast tokenizer's settings are
        changed on every call, and two threads calling one tokenizer at once can fail
        ("Already borrowed"): the inference worker keeps the encoder's own.
        """
        ids = self.counter(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]


@dataclass
class ServedModel:
    """A model name clients send as ``model``, the encoders behind it, and how a
    request's ``instruction`` picks one.

    Example::

        served = ServedModel.from_encoders("pe", "torch", {ANY_INSTRUCTION: embedder})
        served.route("Retrieve a passage").encoder is embedder   # True
    """

    name: str
    backend: str
    dim: int
    routes: dict[Any, Route] = field(default_factory=dict)
    default: Any = None  # the routes key used when a request names no instruction

    @classmethod
    def from_encoders(cls, name: str, backend: str, encoders: dict[Any, Any]) -> ServedModel:
        dims = {int(e.dim) for e in encoders.values()}
        if len(dims) != 1:
            raise ConfigError(
                f"the graphs served as {name!r} have different widths {sorted(dims)}: "
                "serve graphs of one backbone and alignment together"
            )
        routes = {
            key: Route(e, None if key is ANY_INSTRUCTION else key, copy.deepcopy(e.tokenizer),
                       e.max_text_tokens(None if key is ANY_INSTRUCTION else key))
            for key, e in encoders.items()
        }
        model = cls(name, backend, dims.pop(), routes)
        model.default = model._default_key()
        return model

    def _default_key(self) -> Any:
        if len(self.routes) == 1:
            return next(iter(self.routes))
        # several graphs: the one a torch embedder would use for instruction=None
        for key, route in self.routes.items():
            if key == route.encoder.config.document_instruction:
                return key
        return None

    @property
    def instructions(self) -> list[str] | None:
        """The instructions this model serves (None: any)."""
        if ANY_INSTRUCTION in self.routes:
            return None
        return [k for k in self.routes if isinstance(k, str)]

    def route(self, instruction: str | None) -> Route:
        """The route of a request's ``instruction``; a :class:`RequestError` (422) if
        this model has no graph for it."""
        if ANY_INSTRUCTION in self.routes:
            route = self.routes[ANY_INSTRUCTION]
            return Route(route.encoder, instruction, route.counter,
                         route.encoder.max_text_tokens(instruction))
        key = self.default if instruction is None else instruction
        if key in self.routes:
            return self.routes[key]
        have = self.instructions
        if instruction is None:
            raise RequestError(
                f"model {self.name!r} serves one graph per instruction ({have}) and none is "
                "the default: send one of them as `instruction`", status=422,
            )
        raise RequestError(
            f"model {self.name!r} has no graph for the instruction {instruction!r}; it serves "
            f"{have}. Export one with `pe export onnx --instruction ...` and serve the folder "
            "that holds them all, or use --backend torch, which takes any instruction",
            status=422,
        )


def load_torch(name: str, **load_args: Any) -> ServedModel:
    """``pe_core.load(**load_args)`` served under ``name``, for any instruction.

    Example::

        load_torch("pe", backbone="gemma", alignment="my-org/pe-align-gemma").dim
    """
    import pe_core

    embedder = pe_core.load(**load_args)
    return ServedModel.from_encoders(name, "torch", {ANY_INSTRUCTION: embedder})


def onnx_folders(folder: str | Path) -> list[Path]:
    """An exported folder, or a folder whose sub-folders are exported folders."""
    folder = Path(folder)
    if (folder / CONFIG_NAME).is_file():
        return [folder]
    subs = sorted(p for p in folder.iterdir() if (p / CONFIG_NAME).is_file()) \
        if folder.is_dir() else []
    if not subs:
        raise MissingFileError(
            f"{folder} holds no exported graph ({CONFIG_NAME} in it or in its sub-folders): "
            "export one with `pe export onnx --out FOLDER`"
        )
    return subs


def load_onnx(name: str, folder: str | Path) -> ServedModel:
    """Every exported graph under ``folder`` served as ``name``, one per instruction.

    Example::

        load_onnx("pe", "onnx/").instructions   # ["Retrieve ...", "Represent the text ..."]
    """
    from pe_core.plugins import get_plugin_manager

    exporter = get_plugin_manager().exporters().get("onnx")
    encoders: dict[Any, Any] = {}
    for sub in onnx_folders(folder):
        encoder = exporter.load(sub)
        instruction = encoder.instruction
        if instruction in encoders:
            raise ConfigError(
                f"{sub} and another graph under {folder} both bake in the instruction "
                f"{instruction!r}: keep one"
            )
        encoders[instruction] = encoder
    return ServedModel.from_encoders(name, "onnx", encoders)
