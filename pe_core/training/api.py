"""``pe_core.train`` and ``pe_core.align``: the Python face of ``pe train`` / ``pe align``.

Output folders:

* ``train`` (PromptEmbedder): ``alignment.safetensors``, ``pe_config.json`` (with
  ``training_data_hash``), ``prompting/`` (the trained Prompting LLM), ``log.jsonl``,
  ``train_settings.json``, ``checkpoints/``. ``pe_core.load(alignment=out)`` reads it.
* ``align``: ``alignment.safetensors``, ``pe_config.json`` (``prompting_id`` = the source
  run's ``prompting/``), ``log.jsonl``, ``checkpoints/``.
* ``train(method="lora")``: the peft adapter (``adapter_model.safetensors`` +
  ``adapter_config.json``), ``pe_lora_config.json``, log and checkpoints; read it with
  :meth:`LoraEmbedder.load`.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import Any

from pe_core.errors import ArgumentTypeError, ConfigError
from pe_core.training.settings import TrainSettings, split_kwargs


def _model_ref(spec: Any, model: str | None) -> str:
    """The model to train: the one given, else the backbone plugin's default."""
    ref = model or spec.default_model
    if ref is None:
        raise ConfigError(f"backbone {spec.name!r} has no default model: pass model=")
    return str(ref)


def _settings(base: TrainSettings | None, method: str, overrides: dict[str, Any],
              resume_from: Any = None) -> TrainSettings:
    """The run's settings; resuming a run in ``resume_from``, its saved ones with what
    was passed checked against them (:mod:`~pe_core.training.resume`)."""
    if base is not None and not isinstance(base, TrainSettings):
        raise ArgumentTypeError(
            f"settings must be a TrainSettings or None, got {type(base).__name__}; pass "
            "single settings as keywords (steps=100, lr=1e-3)"
        )
    values = base.to_dict() if base is not None else {}
    values.update(overrides)
    values["method"] = method
    given = TrainSettings(**values)
    if resume_from is None:
        return given
    from pe_core.training.resume import resumed_settings
    from pe_core.training.run_folder import check_out

    default = TrainSettings(method=method)
    named = {k for k, v in overrides.items() if v is not None} | {"method"} | (
        {k for k, v in base.to_dict().items() if v != getattr(default, k)} if base else set())
    return resumed_settings(check_out(resume_from), given, named)


def _check_args(refs: dict[str, Any], resume: Any, overwrite: Any, dtype: Any,
                on_step: Any) -> None:
    """The arguments of ``train``/``align`` that are not settings, checked before anything
    is read or built: ``refs`` maps names to model references (a string or path, or None
    for the optional ones)."""
    from pe_core.loading import _dtype

    for name, value in refs.items():
        required = name in ("backbone", "source")
        if value is None and not required:
            continue
        allowed = str if name == "backbone" else (str, PathLike)
        if not isinstance(value, allowed) or value == "":
            what = "a backbone name" if name == "backbone" else "a folder, Hub id or name"
            raise ArgumentTypeError(
                f"{name} must be {what} (a string{'' if required else ' or None'}), got "
                f"{type(value).__name__} {value!r:.60}"
            )
    for name, value in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise ArgumentTypeError(f"{name} must be True or False, got "
                                    f"{type(value).__name__} {value!r:.60}")
    if on_step is not None and not callable(on_step):
        raise ArgumentTypeError(f"on_step must be a function (step, loss) or None, got "
                                f"{type(on_step).__name__}")
    if not isinstance(dtype, str | type(None)) and type(dtype).__name__ != "dtype":
        raise ArgumentTypeError(f"dtype must be a string such as 'float32' or a torch.dtype, "
                                f"got {type(dtype).__name__} {dtype!r:.60}")
    _dtype(dtype)


def _data(data: Any, dev_data: Any, settings: TrainSettings) -> tuple[Any, Any]:
    from pe_core.training.data import read_pairs

    train = read_pairs(data)
    dev = read_pairs(dev_data) if dev_data is not None else None
    if dev is None and settings.dev_size > 0:
        train, dev = train.split_dev(settings.dev_size, settings.seed)
    if dev is None and settings.eval_every:
        warnings.warn("eval_every is set but there is no dev data: pass dev_data= "
                      "(--dev-data) or dev_size= (--dev-size)", stacklevel=4)
    return train, dev


def train(
    data: Any,
    backbone: str,
    model: str | None = None,
    prompting: str | None = None,
    out: str | Path = "runs/pe",
    *,
    method: str = "pe",
    alignment: str | None = None,
    dev_data: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    dtype: Any = None,
    settings: TrainSettings | None = None,
    on_step: Any = None,
    **kwargs: Any,
) -> Any:
    """Contrastive training of a PromptEmbedder (``method="pe"``) or of the LoRA
    baseline (``"lora"``; ``"full"`` fine-tunes every backbone weight).

    Args:
        data: JSONL path, ``datasets.Dataset`` or list of ``{query, positive,
            negatives?, instruction?, task?}`` dicts.
        backbone, model, prompting: as for :func:`pe_core.load`.
        out: output folder (see the module docstring).
        alignment: start from this alignment instead of the least-squares fit.
        dev_data: held-out pairs for the dev score (nDCG@10) in the log.
        resume: continue from ``out``'s newest checkpoint.
        overwrite: replace what ``out`` holds; the new run is written beside it and
            swapped in once complete, so a run that fails leaves ``out`` as it was
            (:mod:`pe_core.training.run_folder`).
        kwargs: any :class:`TrainSettings` field (``steps``, ``batch_size``, ``lr``,
            ``temperature``, ``grad_cache_chunk``, ...) or model option (``placement``,
            ``pooling``, ``num_soft_tokens``, ``document_instruction``, ``max_length``).

    Returns a :class:`~pe_core.training.trainer.TrainResult` whose ``model`` is the
    trained embedder.

    Example::

        result = pe_core.train("pairs.jsonl", backbone="llama", model="path/to/llama",
                               out="runs/llama", steps=500, batch_size=64)
        result.model.encode(["a query"], instruction="Retrieve the documentation")
    """
    _check_args({"backbone": backbone, "model": model, "prompting": prompting,
                 "alignment": alignment}, resume, overwrite, dtype, on_step)
    settings_kw, config_kw = split_kwargs(kwargs)
    s = _settings(settings, method, settings_kw, out if resume else None)
    config_kw = _resumed_options(out, config_kw) if resume else config_kw
    if s.method == "align":
        raise ConfigError("method 'align' trains through pe_core.align(source, ...)")
    if s.method in ("lora", "full") and config_kw.keys() - {"max_length"}:
        raise ConfigError(f"the LoRA baseline takes no model options {sorted(config_kw)}")

    def build(device: Any, train_data: Any) -> tuple[Any, Any, Any]:
        if s.method in ("lora", "full"):
            return _lora(backbone, model, s, config_kw, device, dtype, train_data)
        return _prompt_embedder(
            backbone, model, prompting, alignment, s, config_kw, device, dtype, train_data
        )

    return _run(build, s, data, dev_data, out, resume, overwrite, device, on_step, config_kw)


def _resumed_options(out: Any, given: dict[str, Any]) -> dict[str, Any]:
    from pe_core.training.resume import resumed_options
    from pe_core.training.run_folder import check_out

    return resumed_options(check_out(out), given)


def _run(build: Any, s: TrainSettings, data: Any, dev_data: Any, out: str | Path,
         resume: bool, overwrite: bool, device: str | None, on_step: Any,
         options: dict[str, Any]) -> Any:
    """:func:`_run_locked` while holding ``out``'s lock (rank 0 alone writes, so it alone
    locks): a second run into the same folder fails at once."""
    import os

    from pe_core.training.run_folder import run_lock

    with run_lock(out, writes=os.environ.get("RANK", "0") == "0"):
        return _run_locked(build, s, data, dev_data, out, resume, overwrite, device, on_step,
                           options)


def _run_locked(
    build: Any, s: TrainSettings, data: Any, dev_data: Any, out: str | Path, resume: bool,
    overwrite: bool, device: str | None, on_step: Any, options: dict[str, Any],
) -> Any:
    """The sequence every run shares: check the device, read the data and decide where
    the run writes (:mod:`~pe_core.training.run_folder`) before anything is built or
    written; then the seed, ``build(device, train_data) -> (model, method, save)`` makes
    what trains, and the trainer runs it in that folder. Returns the trainer's result
    with ``model`` set."""
    import torch

    from pe_core.training import distributed as dist_util
    from pe_core.training.device import training_device
    from pe_core.training.loss import check_matryoshka_dims
    from pe_core.training.preflight import check_max_length, check_trainable
    from pe_core.training.resume import check_resume_data, save_settings
    from pe_core.training.run_folder import plan_run_folder, writing
    from pe_core.training.trainer import Trainer
    from pe_core.validate import device as check_device

    device = check_device(device)
    folder = plan_run_folder(out, resume, overwrite)
    train_data, dev = _data(data, dev_data, s)
    if resume:
        check_resume_data(folder.out, train_data.data_hash)
    dist_info = dist_util.setup(device)
    check_trainable(train_data, s, dist_info.world, dev)
    if not dist_info.is_main:  # rank 0 alone writes the run
        folder = replace(folder, writes=False)
    dev_ = training_device(device, dist_info.local_rank)
    torch.manual_seed(s.seed)
    trained, method, save = build(dev_, train_data)
    check_matryoshka_dims(s.matryoshka_dims, trained.dim)
    check_max_length(trained.tokenizer, _max_length(trained), train_data)
    method.module = dist_util.wrap_ddp(method.module, dev_)
    with writing(folder) as work:
        if dist_info.is_main:
            work.mkdir(parents=True, exist_ok=True)
            save_settings(work, s, options)
        trainer = Trainer(method, train_data, s, work, save, dev, dev_, on_step,
                          resumable=not folder.staged)
        result = trainer.fit(resume=resume)
    result.out = folder.out
    result.model = trained
    return result


def _max_length(trained: Any) -> int:
    """The tokens a trained model keeps of a text (a PromptEmbedder's config, or the LoRA
    baseline's own)."""
    config = getattr(trained, "config", None)
    return int(config.max_length if config is not None else trained.max_length)


def _prompt_embedder(
    backbone: str, model: str | None, prompting: str | None, alignment: str | None,
    s: TrainSettings, config_kw: dict[str, Any], device: Any, dtype: Any, data: Any,
) -> tuple[Any, Any, Any]:
    from pe_core.loading import DEFAULT_PROMPTING, assemble, resolve_alignment
    from pe_core.model_refs import resolve_model
    from pe_core.plugins import get_backbone
    from pe_core.training.methods import PromptEmbedderMethod

    spec = get_backbone(backbone)
    model_ref = _model_ref(spec, model)
    prompting_ref = prompting or DEFAULT_PROMPTING
    with warnings.catch_warnings():  # "untrained alignment": that is what training fixes
        warnings.simplefilter("ignore", UserWarning)
        embedder = assemble(
            spec, resolve_model(model_ref), resolve_model(prompting_ref),
            alignment_dir=resolve_alignment(alignment) if alignment else None,
            device=str(device), dtype=dtype,
            refs={"model_id": str(model_ref), "prompting_id": str(prompting_ref)}, **config_kw,
        )
    method = PromptEmbedderMethod(embedder, s)

    def save(folder: Path, dev_scores: dict[str, float]) -> None:
        if s.prompting_lora:  # a plain transformers folder, loadable without peft
            merged = embedder.prompting.model.merge_and_unload()
            embedder.prompting.model = merged
        embedder.config = replace(
            embedder.config, training_data_hash=data.data_hash,
            eval_results={**embedder.config.eval_results,
                          **({"dev": dev_scores} if dev_scores else {})},
        )
        embedder.save(folder, save_prompting=True)

    return embedder, method, save


def _lora(
    backbone: str, model: str | None, s: TrainSettings, config_kw: dict[str, Any],
    device: Any, dtype: Any, data: Any,
) -> tuple[Any, Any, Any]:
    from pe_core.loading import _dtype
    from pe_core.model_refs import resolve_model
    from pe_core.plugins import get_backbone
    from pe_core.training.lora_baseline import LoraMethod, build_lora_embedder

    spec = get_backbone(backbone)
    model_ref = _model_ref(spec, model)
    embedder = build_lora_embedder(
        spec, resolve_model(model_ref), s, model_id=str(model_ref),
        max_length=config_kw.get("max_length", 512), dtype=_dtype(dtype),
    ).to(device)
    method = LoraMethod(embedder, s)

    def save(folder: Path, dev_scores: dict[str, float]) -> None:
        embedder.meta.update(training_data_hash=data.data_hash,
                             eval_results={"dev": dev_scores} if dev_scores else {})
        embedder.save(folder)

    return embedder, method, save


def align(
    source: str | Path,
    data: Any,
    backbone: str,
    model: str | None = None,
    out: str | Path = "runs/align",
    *,
    dev_data: Any = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
    dtype: Any = None,
    settings: TrainSettings | None = None,
    on_step: Any = None,
    init: str = "source",
    **kwargs: Any,
) -> Any:
    """Transfer a trained PromptEmbedder to a new backbone: only a new alignment trains.

    The source run's Prompting LLM is frozen; each instruction's soft tokens are
    computed once and cached. The alignment starts from a least-squares fit:
    ``init="source"`` carries the source run's trained alignment through a map between
    the two backbones' token embeddings, ``"tokens"`` fits the Prompting LLM's token
    embeddings to the new backbone's (see :mod:`pe_core.training.align_init`). ``kwargs`` are
    :class:`TrainSettings` fields (``alignment_lr`` is the learning rate) or
    ``placement``/``pooling``/``max_length``/``document_instruction``.

    Example::

        result = pe_core.align("runs/llama", "pairs.jsonl", backbone="gemma",
                               model="path/to/gemma", out="runs/gemma", steps=200)
    """
    from pe_core.loading import assemble
    from pe_core.model.config import EmbedderConfig
    from pe_core.model_refs import resolve_model
    from pe_core.options import FIXED, INHERIT, SOURCE_PROMPTING, transfer_names
    from pe_core.plugins import get_backbone
    from pe_core.training.align_init import carried_alignment, check_init
    from pe_core.training.methods import AlignMethod

    _check_args({"source": source, "backbone": backbone, "model": model}, resume, overwrite,
                dtype, on_step)
    settings_kw, config_kw = split_kwargs(kwargs)
    fixed = config_kw.keys() & set(transfer_names(EmbedderConfig, FIXED, SOURCE_PROMPTING))
    if fixed:
        raise ConfigError(f"{sorted(fixed)} come from the source run and cannot change in align")
    s = _settings(settings, "align", settings_kw, out if resume else None)
    config_kw = _resumed_options(out, config_kw) if resume else config_kw
    check_init(init)
    source = Path(source)
    _check_apart(source, out)
    src_cfg = EmbedderConfig.load(source)
    prompting_dir = _source_prompting(source, src_cfg)
    inherited = {name: getattr(src_cfg, name)
                 for name in transfer_names(EmbedderConfig, FIXED, INHERIT)}

    def build(device: Any, train_data: Any) -> tuple[Any, Any, Any]:
        spec = get_backbone(backbone)
        model_ref = _model_ref(spec, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            embedder = assemble(
                spec, resolve_model(model_ref), prompting_dir, device=str(device), dtype=dtype,
                refs={"model_id": str(model_ref), "prompting_id": str(prompting_dir.resolve()),
                      **({"prompting_revision": src_cfg.prompting_revision}
                         if src_cfg.prompting_revision else {})},
                **{**inherited, **config_kw},
            )
        if init == "source" and not resume:
            carried = carried_alignment(source, src_cfg, embedder)
            if carried is not None:
                embedder.set_alignment(carried.to(embedder.alignment.weight.device))

        def save(folder: Path, dev_scores: dict[str, float]) -> None:
            embedder.config = replace(
                embedder.config, training_data_hash=train_data.data_hash,
                eval_results={"dev": dev_scores} if dev_scores else {},
            )
            embedder.save(folder, save_prompting=False)

        return embedder, AlignMethod(embedder, s), save

    return _run(build, s, data, dev_data, out, resume, overwrite, device, on_step, config_kw)


def _check_apart(source: Path, out: Any) -> None:
    """The new run must not replace or live inside its source: the source is read while
    it trains, and its ``prompting/`` is what the new run's config points at."""
    if not isinstance(out, str | PathLike):
        return  # plan_run_folder says what out must be
    src, dst = source.resolve(), Path(out).resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        raise ConfigError(f"align: out {out} and the source run {source} overlap; write the "
                          "new run to a folder of its own")


def _source_prompting(source: Path, src_cfg: Any) -> Path:
    """The Prompting LLM a source run was trained with: its ``prompting/`` folder, else
    the one its ``pe_config.json`` names (a pushed or aligned artifact points at the
    trained one); a `pe train` run without ``prompting/`` is refused
    (:func:`pe_core.model.run_prompting.trained_prompting`)."""
    from pe_core.loading import DEFAULT_PROMPTING
    from pe_core.model.run_prompting import trained_prompting
    from pe_core.model_refs import resolve_model

    prompting_dir = trained_prompting(source)
    if prompting_dir is not None:
        return prompting_dir
    if src_cfg.prompting_id is None:
        raise ConfigError(f"{source} has no prompting/ folder and no prompting_id")
    if str(src_cfg.prompting_id).startswith(DEFAULT_PROMPTING):
        warnings.warn(
            f"{source} has no prompting/ folder: pe align uses {src_cfg.prompting_id}, the "
            "untrained default Prompting LLM; pass a `pe train` run folder to carry over a "
            "trained one", UserWarning, stacklevel=3,
        )
    return resolve_model(src_cfg.prompting_id)
