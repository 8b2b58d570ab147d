"""Make any ``encode(texts, instruction=...)`` model usable by ``mteb.evaluate`` (mteb 2.x).

The wrapped object needs ``name`` and ``encode(texts, instruction=None, batch_size=32,
normalize=True, show_progress_bar=None) -> np.ndarray`` (a PromptEmbedder has both). The query
side of a task gets that task's instruction (see :mod:`pe_core.eval.instructions`); the
document side gets ``instruction=None``.

A saved pe model (a folder, Hub repo or registry name) gets a ``ModelMeta`` whose
``loader`` loads it (:func:`pe_model_meta`), so ``meta.load_model()`` and, once
:func:`register`-ed, ``mteb.get_model(meta.name)`` give a working encoder, and
``mteb.evaluate(..., cache=ResultCache(folder))`` files its results under that name in
mteb's own layout.

Example::

    meta = register(pe_model_meta("runs/x"))
    encoder = mteb.get_model(meta.name)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError
from pe_core.eval.instructions import instruction_for
from pe_core.eval.mteb_env import prepare_mteb

prepare_mteb()

import numpy as np  # noqa: E402
from mteb.models import ModelMeta  # noqa: E402
from mteb.models.abs_encoder import AbsEncoder  # noqa: E402


def _model_name(model: Any) -> str:
    name = str(getattr(model, "name", None) or type(model).__name__)
    # ModelMeta insists on "organization/name"
    return name if "/" in name else f"pe/{name}"


def model_meta_for(model: Any, source: str | Path | None = None, **overrides: Any) -> ModelMeta:
    """A ``ModelMeta`` describing ``model`` from whatever attributes it has.

    Read if present: ``name``, ``revision``, ``n_parameters``, ``embed_dim`` (or ``dim``),
    ``max_tokens``. ``source`` is where ``pe_core.load`` finds the model again (folder,
    Hub repo, registry name): the meta's ``loader`` then loads it (:func:`load_for_mteb`);
    without one there is nothing to reload and ``loader`` is None. ``overrides`` replace
    any field.

    Example::

        >>> model_meta_for(my_model, source="runs/x").name  # doctest: +SKIP
        'pe/qwen-default'
    """
    embed_dim = getattr(model, "embed_dim", None) or getattr(model, "dim", None)
    fields: dict[str, Any] = dict(
        loader=None if source is None else load_for_mteb,
        loader_kwargs={} if source is None else {"source": str(source)},
        name=_model_name(model),
        revision=getattr(model, "revision", None),
        release_date=None,
        languages=["eng-Latn"],
        n_parameters=getattr(model, "n_parameters", None),
        memory_usage_mb=None,
        max_tokens=getattr(model, "max_tokens", None),
        embed_dim=embed_dim if isinstance(embed_dim, int) else None,
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch"],
        similarity_fn_name="cosine",
        use_instructions=True,
        training_datasets=None,
    )
    fields.update(overrides)
    return ModelMeta(**fields)


def pe_model_meta(source: str | Path, name: str | None = None, **overrides: Any) -> ModelMeta:
    """The ``ModelMeta`` of the pe model saved at ``source`` (folder, Hub repo or registry
    name), read from its ``pe_config.json`` without loading the model; its ``loader``
    loads it. ``name`` defaults to ``pe/<folder name>``, ``revision`` to a hash of the
    saved weights and config (mteb files results per revision: retrained weights do not
    overwrite the old scores).

    Example::

        meta = pe_model_meta("runs/x")         # ModelMeta(name="pe/x", embed_dim=d_B, ...)
        encoder = meta.load_model(device="cpu")
    """
    from pe_core.loading import resolve_alignment
    from pe_core.model.config import EmbedderConfig

    folder = resolve_alignment(source)
    config = EmbedderConfig.load(folder)
    fields: dict[str, Any] = dict(
        name=name or f"pe/{Path(str(source)).name}", revision=content_revision(folder),
        embed_dim=config.d_B,
        max_tokens=config.max_length, framework=["PyTorch", "Sentence Transformers"])
    return model_meta_for(None, source=source, **{**fields, **overrides})


def content_revision(folder: Path) -> str:
    """12 hex digits of the sha256 over a saved model's config and weights (the
    alignment and, when saved with it, the Prompting LLM)."""
    from pe_core.safe_io import sha256_file

    files = [folder / "pe_config.json", folder / "alignment.safetensors",
             *sorted((folder / "prompting").glob("*.safetensors"))]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(f"{path.relative_to(folder)}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()[:12]


def load_for_mteb(model_name: str, revision: str | None = None, *, source: str,
                  device: str | None = None, batch_size: int = 32,
                  embed_dim: int | None = None, **load_kwargs: Any) -> MTEBEncoder:
    """mteb's ``loader`` for a saved pe model (``ModelMeta.load_model`` calls it with the
    meta's name and revision): ``pe_core.load(source, device=device, **load_kwargs)``
    wrapped in :class:`MTEBEncoder`. ``embed_dim`` is mteb's; it can only be the model's
    own width (mteb checks it against the meta)."""
    import pe_core

    return MTEBEncoder(pe_core.load(source, device=device, **load_kwargs),
                       batch_size=batch_size)


def register(meta: ModelMeta) -> ModelMeta:
    """Add ``meta`` to mteb's model registry, so ``mteb.get_model(meta.name)`` and
    ``mteb.get_model_meta(meta.name)`` find it in this process (mteb looks a name up
    there before it asks the Hub)."""
    from mteb.models.model_implementations import MODEL_REGISTRY

    if not meta.name:
        raise ConfigError("a ModelMeta needs a name to be registered")
    MODEL_REGISTRY[meta.name] = meta
    return meta


class MTEBEncoder(AbsEncoder):
    """mteb 2.x encoder protocol around an ``encode(texts, instruction=...)`` model.

    ``instructions`` maps task names to instructions and takes priority over the defaults;
    ``instruction_fn(task_metadata, prompt_type)`` replaces the whole lookup.

    Example::

        >>> import mteb
        >>> from pe_core.eval import MTEBEncoder, get_tasks
        >>> result = mteb.evaluate(MTEBEncoder(embedder), get_tasks(["PELocalDocstringRetrieval"]),
        ...                        cache=None)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        *,
        instructions: Mapping[str, str] | None = None,
        instruction_fn: Callable[[Any, Any], str | None] | None = None,
        batch_size: int = 32,
        meta: ModelMeta | None = None,
    ) -> None:
        if not callable(getattr(model, "encode", None)):
            raise TypeError(f"{type(model).__name__} has no encode(texts, instruction=...) method")
        self.model = model
        self.instructions = dict(instructions or {})
        self.instruction_fn = instruction_fn
        self.batch_size = batch_size
        self.mteb_model_meta = meta or model_meta_for(model)
        self.calls: list[tuple[str, str | None, int]] = []  # (task, instruction, n) for logs

    def instruction(self, task_metadata: Any, prompt_type: Any = None) -> str | None:
        """The instruction this wrapper passes for one side of one task."""
        if self.instruction_fn is not None:
            return self.instruction_fn(task_metadata, prompt_type)
        side = getattr(prompt_type, "value", prompt_type)
        if side != "document" and task_metadata.name in self.instructions:
            return self.instructions[task_metadata.name]
        return instruction_for(task_metadata, prompt_type)

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Encode every batch of ``inputs`` (mteb's DataLoader of ``{"text": [...]}`` dicts)."""
        texts: list[str] = []
        for batch in inputs:
            texts.extend(str(t) for t in batch["text"])
        instruction = self.instruction(task_metadata, prompt_type)
        self.calls.append((task_metadata.name, instruction, len(texts)))
        if not texts:
            dim = getattr(self.mteb_model_meta, "embed_dim", None)
            return np.zeros((0, dim if isinstance(dim, int) else 0), dtype=np.float32)
        # each distinct text once: an STS task lists every document once per pair it is in
        # (Lee: 50 documents, 2 x 1,225 texts), and an embedding is a function of its text
        unique = list(dict.fromkeys(texts))
        vectors = self.model.encode(
            unique,
            instruction=instruction,
            batch_size=int(kwargs.get("batch_size") or self.batch_size),
            normalize=True,
            show_progress_bar=kwargs.get("show_progress_bar"),
        )
        if hasattr(vectors, "detach"):  # a torch tensor slipped through
            vectors = vectors.detach().cpu().numpy()
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(unique) == len(texts):
            return vectors
        row = {text: i for i, text in enumerate(unique)}
        return vectors[[row[text] for text in texts]]
