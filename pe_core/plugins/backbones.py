"""Backbone specs and the registry plugins fill through ``pe_register_backbones``.

A :class:`BackboneSpec` is everything pe needs to know about one backbone family; it
holds plain data and small functions, so registering it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pe_core.errors import DuplicateBackboneError, PluginSpecError, UnknownBackboneError


def scaled_embedding_factor(model: Any) -> float:
    """The factor the installed transformers' embedding *module* applies to table rows.

    Some releases scale token embeddings inside the embedding module (``embed_scale``,
    e.g. Gemma 3 on 4.57, Gemma on 5.x), others inside ``forward`` after
    ``inputs_embeds`` is read (Gemma on 4.57). Soft vectors live in the space of raw
    table rows, so they must get exactly the module's factor: the forward's factor, if
    any, is then applied to text and soft positions alike.
    """
    scale = getattr(model.get_input_embeddings(), "embed_scale", None)
    if scale is None:
        return 1.0
    return float(scale.item() if hasattr(scale, "item") else scale)


def default_soft_prompt_hook(model: Any, soft: Any) -> Any:
    """Map soft vectors from raw embedding-row space into ``inputs_embeds`` space."""
    factor = scaled_embedding_factor(model)
    return soft if factor == 1.0 else soft * factor


def default_token_embeddings(model: Any, input_ids: Any) -> Any:
    """The ``inputs_embeds`` the model would build itself from ``input_ids``."""
    return model.get_input_embeddings()(input_ids)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone family, as a plugin registers it.

    Example::

        BackboneSpec(name="llama", model_types=("llama",),
                     default_model="meta-llama/Llama-3.2-1B",
                     tiny_configs={"llama": {"hidden_size": 64, ...}})

    Attributes:
        name: the name users pass to ``pe_core.load(backbone=...)``.
        model_types: transformers ``model_type`` values this family handles.
        default_model: Hub id (optionally ``id@revision``) used when no model is given.
        tiny_configs: ``model_type -> config kwargs`` for tiny random test models.
        soft_prompt_hook: ``(model, soft) -> inputs_embeds`` for soft vectors given in
            raw embedding-row space (docs/concepts.md, Embedding hook).
        token_embeddings: ``(model, input_ids) -> inputs_embeds`` for text tokens.
        padding_side: tokenizer padding side used when encoding.
        pooling: default pooling (``"last"`` or ``"mean"``).
        attn_implementation: attention kernel to load the model with (None: the installed
            transformers' default), or a ``model_type -> kernel`` mapping where the exact
            and fastest one differs within the family (e.g. eager for Gemma 2's logit
            soft-capping, SDPA for Gemma 3); read it through :meth:`attention_for`.
        onnx_opset: opset for ONNX export.
        distribution: filled in by the plugin manager: the distribution registering it.
    """

    name: str
    model_types: tuple[str, ...]
    default_model: str | None = None
    tiny_configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    soft_prompt_hook: Callable[[Any, Any], Any] = default_soft_prompt_hook
    token_embeddings: Callable[[Any, Any], Any] = default_token_embeddings
    padding_side: str = "right"
    pooling: str = "last"
    attn_implementation: str | Mapping[str, str] | None = None
    onnx_opset: int = 18
    distribution: str = "unknown"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "_").isidentifier():
            raise PluginSpecError(f"backbone name must be an identifier, got {self.name!r}")
        if not self.model_types:
            raise PluginSpecError(f"backbone {self.name!r} must handle at least one model_type")
        if self.padding_side not in ("left", "right"):
            raise PluginSpecError(
                f"padding_side must be 'left' or 'right', got {self.padding_side!r}"
            )
        if self.pooling not in ("last", "mean"):
            raise PluginSpecError(f"pooling must be 'last' or 'mean', got {self.pooling!r}")

    def attention_for(self, model_type: str) -> str | None:
        """The attention kernel to load a ``model_type`` checkpoint of this family with."""
        if isinstance(self.attn_implementation, Mapping):
            return self.attn_implementation.get(model_type)
        return self.attn_implementation


class BackboneRegistry:
    """Name -> :class:`BackboneSpec`, filled by plugins, with typed lookup errors."""

    def __init__(self) -> None:
        self._specs: dict[str, BackboneSpec] = {}
        self._current_distribution = "unknown"

    def register(self, spec: BackboneSpec) -> None:
        """Add ``spec``; a name registered twice raises :class:`DuplicateBackboneError`."""
        if spec.distribution == "unknown":
            spec = _replace(spec, distribution=self._current_distribution)
        old = self._specs.get(spec.name)
        if old is not None:
            raise DuplicateBackboneError(
                f"backbone {spec.name!r} is registered by both {old.distribution!r} and "
                f"{spec.distribution!r}; uninstall one of them"
            )
        self._specs[spec.name] = spec

    def get(self, name: str) -> BackboneSpec:
        try:
            return self._specs[name]
        except KeyError:
            installed = ", ".join(sorted(self._specs)) or "none"
            raise UnknownBackboneError(
                f"unknown backbone {name!r}; installed backbones: {installed}. "
                f"Install its plugin with: pip install pe-plugin-{name}"
            ) from None

    def for_model_type(self, model_type: str) -> BackboneSpec | None:
        for spec in self._specs.values():
            if model_type in spec.model_types:
                return spec
        return None

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __iter__(self) -> Iterator[BackboneSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs


def _replace(spec: BackboneSpec, **changes: Any) -> BackboneSpec:
    from dataclasses import replace

    return replace(spec, **changes)

