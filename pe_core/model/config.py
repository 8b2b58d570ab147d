"""The embedder configuration, saved as ``pe_config.json`` next to the weights."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, MissingFileError
from pe_core.options import BOTH, FIXED, INHERIT, SOURCE_PROMPTING, TRAIN, option

CONFIG_NAME = "pe_config.json"
ALIGNMENT_WEIGHTS_NAME = "alignment.safetensors"  # the alignment's weights, next to CONFIG_NAME
ALIGNMENT_FORMAT = "pe-alignment/1"  # safetensors header "format" of those weights
DEFAULT_TEMPLATE = "Instruction: {instruction}\nSoft prompt:"
# the "query" named prompt of a config that names none (sentence-transformers' convention:
# encode_query / encode_document pick the prompts named "query" / "document")
DEFAULT_QUERY_INSTRUCTION = "Retrieve a passage that answers the question"
DOCUMENT_INSTRUCTION = "Represent the text for retrieval"  # document_instruction's default
PLACEMENTS = ("prefix", "suffix")
POOLINGS = ("last", "mean")
SOFT_NORMS = ("free", "tokens")


@dataclass
class EmbedderConfig:
    """How a PromptEmbedder is put together; every field is JSON. Fields declared with
    :func:`~pe_core.options.option` are the ones training accepts as model options.

    Example::

        EmbedderConfig(backbone="llama", model_id="meta-llama/Llama-3.2-1B",
                       prompting_id="Qwen/Qwen2.5-0.5B", d_P=896, d_B=2048)

    Choices pe makes where the paper is silent:
        * ``placement="suffix"``: ``[text ; soft]`` with last-token pooling; the text's
          keys/values need no gradient, which is what makes training cheap.
        * ``document_instruction``: documents get this generic instruction (so both
          sides carry a trainable soft prompt); ``None`` encodes them with no prompt.
        * ``pooling="mean"`` averages the positions that depend on the prompt and the
          text: the text positions for ``prefix``, the soft positions for ``suffix``.
        * ``soft_norm="free"``: an aligned soft token may take any norm. ``"tokens"``
          pins each one to the median norm of the backbone's own token embeddings, so
          training can turn its direction only (a lever against soft tokens drifting
          into a backbone's attention-sink state; see docs/benchmarks/attention-sinks.md).
    """

    backbone: str
    d_P: int
    d_B: int
    model_id: str | None = option(None, help="the backbone model's folder or Hub id")
    model_revision: str | None = option(None, help="the backbone model's Hub revision")
    prompting_id: str | None = option(None, help="the Prompting LLM's folder or Hub id",
                                      transfer=SOURCE_PROMPTING)
    prompting_revision: str | None = option(None, help="the Prompting LLM's Hub revision",
                                            transfer=SOURCE_PROMPTING)
    num_soft_tokens: int = option(5, help="K", cli=(TRAIN,), group="PromptEmbedder",
                                  transfer=FIXED)
    placement: str = option("suffix", help="where the soft prompt goes", cli=BOTH,
                            group="PromptEmbedder", transfer=INHERIT, choices=PLACEMENTS)
    pooling: str = option("last", help="pooled positions", cli=(TRAIN,),
                          group="PromptEmbedder", transfer=INHERIT, choices=POOLINGS,
                          default_text="default: the backbone's")
    soft_norm: str = option(
        "free", help="'tokens' rescales every aligned soft token to the median norm of the "
        "backbone's token embeddings; 'free' leaves its norm to training", cli=BOTH,
        group="PromptEmbedder", transfer=INHERIT, choices=SOFT_NORMS,
    )
    template: str = option(DEFAULT_TEMPLATE, help="the Prompting LLM's input", transfer=FIXED)
    document_instruction: str | None = option(
        DOCUMENT_INSTRUCTION, help="generic instruction for documents ('' for "
        "none)", cli=(TRAIN,), group="PromptEmbedder", transfer=INHERIT,
    )
    max_length: int = option(512, help="tokens per text", cli=BOTH, group="PromptEmbedder",
                             transfer=INHERIT)
    # name -> instruction ("" = no soft prompt), as sentence-transformers' ``prompts``;
    # "query" and "document" are filled in when missing (see __post_init__)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    training_data_hash: str | None = None
    eval_results: dict[str, Any] = field(default_factory=dict)
    pe_version: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        if self.num_soft_tokens < 1:
            raise ConfigError(
                f"num_soft_tokens (K) must be an integer >= 1, got {self.num_soft_tokens!r}"
            )
        if self.placement not in PLACEMENTS:
            raise ConfigError(f"placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.soft_norm not in SOFT_NORMS:
            raise ConfigError(f"soft_norm must be one of {SOFT_NORMS}, got {self.soft_norm!r}")
        if self.d_P < 1 or self.d_B < 1:
            raise ConfigError(f"d_P and d_B must be positive, got {self.d_P}, {self.d_B}")
        check_template(self.template)
        if self.max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {self.max_length}")
        self._fill_prompts()

    def _fill_prompts(self) -> None:
        """Check ``prompts``, add "query" when missing (a config saved before named
        prompts existed) and set "document" to ``document_instruction`` ("" when that is
        None): the document prompt *is* that field, so a config copied with another
        ``document_instruction`` (``dataclasses.replace``) keeps the two in step."""
        for name, text in self.prompts.items():
            if not isinstance(name, str) or not name or not isinstance(text, str):
                raise ConfigError(
                    f"prompts must map names to instruction strings, got {name!r}: "
                    f"{text!r:.60}; fix {CONFIG_NAME} or save the model again"
                )
        self.prompts = {"query": DEFAULT_QUERY_INSTRUCTION, **self.prompts,
                        "document": self.document_instruction or ""}
        if self.default_prompt_name is not None and self.default_prompt_name not in \
                self.prompts:
            raise ConfigError(
                f"default_prompt_name {self.default_prompt_name!r} is not one of the "
                f"prompts {sorted(self.prompts)}"
            )

    @property
    def K(self) -> int:
        return self.num_soft_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedderConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{CONFIG_NAME} must hold a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{CONFIG_NAME} has unknown keys {unknown}; it was written by a newer pe "
                "(upgrade pe-core) or edited by hand"
            )
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise ConfigError(
                f"{CONFIG_NAME} lacks the required keys {missing}; it was cut short or edited "
                "by hand: save the alignment again"
            )
        prompts = data.get("prompts")
        document = prompts.get("document") if isinstance(prompts, dict) else None
        instruction = data.get("document_instruction", DOCUMENT_INSTRUCTION)
        # (values of the wrong type are left to the type check, which names them)
        if isinstance(document, str) and isinstance(instruction, str | None) and \
                document != (instruction or ""):
            raise ConfigError(
                f"{CONFIG_NAME}: prompts['document'] {document!r:.60} differs from "
                "document_instruction: the document prompt is document_instruction, change "
                "that field (or name this prompt otherwise)"
            )
        return cls(**data)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> EmbedderConfig:
        path = Path(folder) / CONFIG_NAME
        if not path.is_file():
            raise MissingFileError(f"{path} not found: is {folder} a pe alignment folder?")
        try:
            data = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}): save the alignment again") \
                from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def check_template(template: str) -> None:
    """The Prompting LLM's input must format with ``instruction`` alone: a template with
    another field (``{x}``) or a lone brace would fail only at the first encode."""
    if "{instruction}" not in template:
        raise ConfigError("template must contain '{instruction}'")
    try:
        template.format(instruction="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"template {template!r:.80} does not format with {{instruction}} alone "
            f"({type(exc).__name__}: {exc}); write other braces as {{{{ and }}}}"
        ) from None


# the JSON types each annotation admits (bool is refused where an int is meant)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "str": (str,), "str | None": (str, type(None)),
    "dict[str, Any]": (dict,), "dict[str, str]": (dict,),
}


def _check_type(name: str, value: Any, annotation: Any) -> None:
    allowed = _JSON_TYPES[str(annotation)]
    if isinstance(value, bool) or not isinstance(value, allowed):
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
        raise ConfigError(
            f"{name} must be {wanted}, got {type(value).__name__} {value!r:.60}; fix "
            f"{CONFIG_NAME} or save the alignment again"
        )
