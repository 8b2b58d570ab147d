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

from pe_core.errors import ConfigError, MissingFileError
from pe_core.model.config import CONFIG_NAME

ANY_INSTRUCTION = object()  # key of an encoder that takes whatever instruction it is given


def chars_per_token(tokenizer: Any) -> int:
    """The most characters one token of ``tokenizer`` stands for: its longest vocabulary
    entry (byte-level entries spell one character per byte, so this bounds characters
    too). A text longer than ``n * chars_per_token`` characters has more than ``n``
    tokens, unless the tokenizer drops characters (:meth:`Route.measure` checks)."""
    return max(len(entry) for entry in tokenizer.get_vocab())


def instruction_chars(embedder: Any) -> int | None:
    """Characters past which an instruction cannot fit the Prompting LLM's positions
    (the exact check, in tokens, runs when its soft prompt is made: this one spares the
    inference thread from tokenizing megabytes first)."""
    from pe_core.model.encoder import max_positions

    prompting = getattr(embedder, "prompting", None)
    if prompting is None:  # an ONNX graph: its instruction is baked in
        return None
    positions = max_positions(prompting.model)
    return None if positions is None else positions * chars_per_token(prompting.tokenizer)


@dataclass
class Measured:
    """What :meth:`Route.measure` found: the texts to encode, their token counts, and
    which were cut at the character bound (their count is a lower bound)."""

    texts: list[str]
    counts: list[int]
    cut: list[bool]


@dataclass
class Route:
    """Where one request's texts go: an encoder and the instruction to pass it."""

    encoder: Any
    instruction: str | None
    counter: Any  # a tokenizer copy that only the server's tokenizer thread uses
    max_length: int
    chars_per_token: int

    @property
    def key(self) -> tuple[int, str | None]:
        """Requests with equal keys are encoded together."""
        return id(self.encoder), self.instruction

    @property
    def chosen(self) -> dict[str, str | None]:
        """``encode``'s keyword for this route's resolved instruction: ``prompt=""`` for
        none, since ``instruction=None`` would mean the model's default."""
        return {"prompt": ""} if self.instruction is None else {"instruction": self.instruction}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text as ``encode`` sees them (special tokens included, untruncated).

        A separate tokenizer copy is used because a fast tokenizer's settings are
        changed on every call, and two threads calling one tokenizer at once can fail
        ("Already borrowed"): the inference worker keeps the encoder's own.
        """
        ids = self.counter(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    def measure(self, texts: Sequence[str], limit: int) -> Measured:
        """Token counts of ``texts`` against ``limit``, without tokenizing more than a
        text's first ``limit * chars_per_token`` characters: a 20 MB text takes seconds
        to tokenize and can never fit. A text past that bound is cut there; when the cut
        part already has more than ``limit`` tokens it stands for the text (encoding it
        truncated reads the same first ``limit`` tokens, but for a word cut in two at the
        bound), otherwise (a tokenizer that drops characters) the whole text is counted.
        """
        bound = limit * self.chars_per_token
        out = list(texts)
        cut = [len(t) > bound for t in out]
        counts = self.count_tokens([t[:bound] if len(t) > bound else t for t in out])
        for i, text in enumerate(texts):
            if cut[i] and counts[i] <= limit:
                counts[i], cut[i] = self.count_tokens([text])[0], False
            elif cut[i]:
                out[i] = text[:bound]
        return Measured(out, counts, cut)


@dataclass
class ServedModel:
    """A model name clients send as ``model``, the encoders behind it, and how a
    request's ``instruction`` or ``prompt_name`` picks one.

    Example::

        served = ServedModel.from_encoders("pe", "torch", {ANY_INSTRUCTION: embedder})
        served.route(served.resolve(prompt_name="query")).encoder is embedder   # True
        served.encode(["a text"], instruction="Retrieve a passage")  # that encoder's encode
    """

    name: str
    backend: str
    dim: int
    routes: dict[Any, Route] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name -> instruction
    default_prompt_name: str | None = None
    default_instruction: str | None = None  # with neither instruction nor prompt name
    instruction_chars: int | None = None  # longer instructions cannot fit (None: no bound)

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
                       e.max_text_tokens(None if key is ANY_INSTRUCTION else key),
                       chars_per_token(e.tokenizer))
            for key, e in encoders.items()
        }
        config = next(iter(encoders.values())).config
        model = cls(name, backend, dims.pop(), routes, prompts=dict(config.prompts))
        if ANY_INSTRUCTION in encoders:  # one embedder: its own defaults
            model.default_prompt_name = config.default_prompt_name
            model.default_instruction = config.document_instruction
            model.instruction_chars = instruction_chars(encoders[ANY_INSTRUCTION])
        else:
            model.default_instruction = model._default_graph(config)
        return model

    def _default_graph(self, config: Any) -> Any:
        """The graph a request naming no instruction gets: the only one, else the one
        the model's default prompt or document instruction names."""
        if len(self.routes) == 1:
            return next(iter(self.routes))
        named = self.prompts.get(config.default_prompt_name or "")
        for wanted in (named, config.document_instruction):
            if wanted is not None and wanted in self.routes:
                return wanted
        return None

    @property
    def instructions(self) -> list[str] | None:
        """The instructions this model serves (None: any)."""
        if ANY_INSTRUCTION in self.routes:
            return None
        return [k for k in self.routes if isinstance(k, str)]

    def resolve(self, instruction: str | None = None, prompt_name: str | None = None,
                prompt: str | None = None) -> str | None:
        """The instruction a request asks for (None: no soft prompt), as ``encode``
        chooses it: ``instruction``, ``prompt`` or the prompt named ``prompt_name``
        (at most one), else the model's default; :class:`ConfigError` otherwise."""
        from pe_core.validate import chosen_instruction

        return chosen_instruction(instruction, prompt, prompt_name, self.prompts,
                                  self.default_prompt_name, self.default_instruction)

    def route(self, instruction: str | None) -> Route:
        """The route of a resolved instruction (see :meth:`resolve`); a
        :class:`ConfigError` if this model has no graph for it."""
        if ANY_INSTRUCTION in self.routes:
            bound = self.instruction_chars
            if instruction is not None and bound is not None and len(instruction) > bound:
                raise ConfigError(
                    f"the instruction has {len(instruction)} characters, more than the "
                    f"Prompting LLM can read ({bound} characters at most): shorten it"
                )
            route = self.routes[ANY_INSTRUCTION]
            return Route(route.encoder, instruction, route.counter,
                         route.encoder.max_text_tokens(instruction), route.chars_per_token)
        if instruction in self.routes:
            return self.routes[instruction]
        if instruction is None:
            raise ConfigError(
                f"model {self.name!r} serves one graph per instruction ({self.instructions})"
                " and none is the default: send one of them as `instruction`"
            )
        raise ConfigError(
            f"model {self.name!r} has no graph for the instruction {instruction!r:.200}; it "
            f"serves {self.instructions}. Export one with `pe export onnx --instruction ...` "
            "and serve the folder that holds them all, or use --backend torch, which takes "
            "any instruction"
        )

    def encode(self, texts: Any, instruction: str | None = None, *,
               prompt_name: str | None = None, prompt: str | None = None, **kw: Any) -> Any:
        """``encode`` of the encoder that serves the instruction asked for (the ONNX
        graph baked with it)."""
        route = self.route(self.resolve(instruction, prompt_name, prompt))
        return route.encoder.encode(texts, **route.chosen, **kw)


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
