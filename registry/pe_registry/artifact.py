"""What an artifact folder holds, how it is checked, and how a publishable copy is made.

Two kinds:

* ``alignment``: ``alignment.safetensors`` + ``pe_config.json`` + ``README.md``;
* ``prompting``: a transformers causal-LM folder + ``pe_prompting.json`` + ``README.md``.

Both get a ``pe_manifest.json`` when staged. A training run folder (``runs/llama``) is an
alignment source that may also hold ``prompting/`` (the trained Prompting LLM),
``checkpoints/`` and ``log.jsonl``; only the artifact files are published.

An alignment's weights are checked by reading the safetensors JSON header (shapes,
offsets, metadata), never by loading tensors, so checking one needs no torch; a Prompting
LLM folder is checked as pe-core checks every model folder. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pe_core.errors import (
    ConfigError,
    CorruptFileError,
    DimensionMismatchError,
    MissingFileError,
    NonFiniteWeightsError,
)
from pe_core.integrations.st_files import write_st_files
from pe_core.model.config import (
    ALIGNMENT_FORMAT,
    ALIGNMENT_WEIGHTS_NAME,
    CONFIG_NAME,
    EmbedderConfig,
)
from pe_core.model.run_prompting import trained_prompting
from pe_registry import card
from pe_registry.manifest import MANIFEST_NAME, Manifest, build_manifest, verify
from pe_registry.prompting import PROMPTING_NAME, PromptingInfo

ALIGNMENT = "alignment"
PROMPTING = "prompting"
PROMPTING_SUFFIX = "-prompting"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
WIDTH_KEYS = ("hidden_size", "n_embd", "d_model")
_MAX_HEADER = 100 * 1024 * 1024
logger = logging.getLogger(__name__)


def detect_kind(folder: str | Path) -> str:
    """``"alignment"`` or ``"prompting"``; :class:`MissingFileError` for anything else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder")
    if (folder / ALIGNMENT_WEIGHTS_NAME).is_file() or (folder / CONFIG_NAME).is_file():
        return ALIGNMENT
    if (folder / PROMPTING_NAME).is_file():
        return PROMPTING
    raise MissingFileError(
        f"{folder} is not a pe artifact: it has neither {ALIGNMENT_WEIGHTS_NAME} + {CONFIG_NAME} "
        f"(an alignment or training run) nor {PROMPTING_NAME} (a Prompting LLM)"
    )


def safetensors_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensor entries (dtype, shape, data_offsets) and metadata of a safetensors file,
    read from its JSON header; the data length is checked so truncation is caught."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} not found")
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(fh.read(n))
        meta = header.pop("__metadata__", None) or {}
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
        if 8 + n + end != size:
            raise ValueError(f"tensors need {8 + n + end} bytes, the file has {size}")
        for t in header.values():
            [int(d) for d in t["shape"]]
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(
            f"{path} is not a valid safetensors file ({exc}); it is truncated or corrupt"
        ) from exc
    return header, {str(k): str(v) for k, v in meta.items()}


# how each float dtype of a safetensors header marks inf and NaN: every exponent bit set
_NONFINITE = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000),
              "F64": ("<u8", 0x7FF0000000000000)}
_CHUNK = 1 << 24  # elements scanned at a time, so a large model needs little memory


def check_weights_file(path: str | Path) -> None:
    """Every tensor of a safetensors file is floating point and finite, read from its
    raw bytes (no torch): what ``pe_core``'s loader refuses is refused before it is
    published, not after someone pulled it.

    Raises :class:`CorruptFileError` (a non-float tensor) or
    :class:`NonFiniteWeightsError`.
    """
    import numpy as np

    path = Path(path)
    tensors, _ = safetensors_header(path)
    if not tensors:
        return
    with open(path, "rb") as fh:
        start = 8 + int.from_bytes(fh.read(8), "little")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start)
    for name, entry in tensors.items():
        form = _NONFINITE.get(entry["dtype"])
        if form is None:
            raise CorruptFileError(
                f"{path}: tensor {name!r} is {entry['dtype']}, not floating point; the "
                "weights were written wrongly: save them again from the trained model"
            )
        lo, hi = (int(x) for x in entry["data_offsets"])
        bits, mask = data[lo:hi].view(form[0]), form[1]
        for i in range(0, len(bits), _CHUNK):
            if ((bits[i:i + _CHUNK] & mask) == mask).any():
                raise NonFiniteWeightsError(
                    f"{path}: tensor {name!r} holds NaN or inf values, so every embedding "
                    "would be NaN; the run diverged or the file is damaged: publish an "
                    "earlier checkpoint or train again"
                )


def check_alignment(folder: str | Path) -> EmbedderConfig:
    """The alignment's config, after checking that the weights agree with ``d_P``/``d_B``
    in the safetensors header and in ``pe_config.json``.

    Raises :class:`DimensionMismatchError`, :class:`MissingFileError`,
    :class:`CorruptFileError` or :class:`ConfigError`.
    """
    folder = Path(folder)
    cfg = EmbedderConfig.load(folder)
    weights = folder / ALIGNMENT_WEIGHTS_NAME
    tensors, meta = safetensors_header(weights)
    fmt = meta.get("format")
    if fmt is not None and fmt != ALIGNMENT_FORMAT:
        raise CorruptFileError(f"{weights} has format {fmt!r}, expected {ALIGNMENT_FORMAT!r}")
    weight = tensors.get("weight")
    if weight is None or len(weight["shape"]) != 2:
        raise DimensionMismatchError(f"{weights} holds no 2-D 'weight' tensor")
    rows, cols = (int(d) for d in weight["shape"])
    try:
        declared = (int(meta.get("d_P", rows)), int(meta.get("d_B", cols)))
    except ValueError as exc:
        raise CorruptFileError(f"{weights}: d_P/d_B in the header are not integers") from exc
    if declared != (rows, cols):
        raise DimensionMismatchError(
            f"{weights}: header declares d_P x d_B = {declared[0]} x {declared[1]} but the "
            f"weights are {rows} x {cols}"
        )
    if (cfg.d_P, cfg.d_B) != (rows, cols):
        raise DimensionMismatchError(
            f"{folder}: {CONFIG_NAME} declares d_P x d_B = {cfg.d_P} x {cfg.d_B} but "
            f"{ALIGNMENT_WEIGHTS_NAME} is {rows} x {cols}; fix the config or save the weights again"
        )
    bias = tensors.get("bias")
    if bias is not None and [int(d) for d in bias["shape"]] != [cols]:
        raise DimensionMismatchError(
            f"{weights}: bias has shape {bias['shape']}, expected [{cols}]"
        )
    check_weights_file(weights)
    return cfg


def check_prompting_model(folder: str | Path, d_P: int) -> None:
    """A Prompting LLM folder is a model folder pe-core can load (config, readable
    safetensors weights, a tokenizer) whose width is ``d_P``."""
    from pe_core.model_refs import check_model_folder

    folder = Path(folder)
    check_model_folder(folder)
    for weights in sorted(folder.glob("*.safetensors")):
        check_weights_file(weights)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config_path} is not valid JSON: {exc}") from exc
    width = next((config[k] for k in WIDTH_KEYS if isinstance(config.get(k), int)), None)
    if width is not None and width != d_P:
        raise DimensionMismatchError(
            f"{folder}: the Prompting LLM has width {width} but the alignment expects "
            f"d_P={d_P}; publish the prompting model the alignment was trained with"
        )


def check_artifact(folder: str | Path) -> str:
    """Check an artifact's own consistency (not its hashes); return its kind."""
    kind = detect_kind(folder)
    if kind == ALIGNMENT:
        check_alignment(folder)
    else:
        info = PromptingInfo.load(folder)
        check_prompting_model(folder, info.d_P)
    return kind


# -- staging -----------------------------------------------------------------------
def stage_alignment(
    cfg: EmbedderConfig, source: str | Path, dst: str | Path, name: str
) -> Manifest:
    """Write a publishable alignment into the empty folder ``dst``: the weights of
    ``source``, ``cfg`` as ``pe_config.json``, a card for ``name`` and the manifest."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(source) / ALIGNMENT_WEIGHTS_NAME, dst / ALIGNMENT_WEIGHTS_NAME)
    cfg.save(dst)
    write_st_files(dst, cfg)  # a pushed model loads in sentence-transformers too
    cfg = check_alignment(dst)
    card.alignment_card(cfg, name).save(dst / CARD_NAME)
    manifest = build_manifest(dst, ALIGNMENT)
    manifest.save(dst)
    return manifest


def stage_prompting(
    source: str | Path, dst: str | Path, name: str, info: PromptingInfo
) -> Manifest:
    """Write a publishable Prompting LLM into ``dst``: the model folder ``source`` (pickle
    files and hidden files left out), ``info``, a card and the manifest."""
    source, dst = Path(source), Path(dst)
    check_prompting_model(source, info.d_P)
    regenerated = {PROMPTING_NAME, CARD_NAME, MANIFEST_NAME}
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if not path.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.as_posix() in regenerated:
            continue
        if path.suffix in PICKLE_SUFFIXES:
            logger.warning("not publishing %s: pickle files are never published", path)
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst / rel)
    info.save(dst)
    card.prompting_card(info, name).save(dst / CARD_NAME)
    manifest = build_manifest(dst, PROMPTING)
    manifest.save(dst)
    return manifest


def read_source(source: str | Path) -> tuple[str, Any]:
    """Kind and metadata (``EmbedderConfig`` or ``PromptingInfo``) of a folder to
    publish, after checking it (and its hashes, when it carries a manifest)."""
    source = Path(source)
    kind = detect_kind(source)
    if (source / MANIFEST_NAME).is_file():
        verify(source)  # re-publishing a pulled artifact: it must be intact
    if kind == ALIGNMENT:
        return kind, check_alignment(source)
    info = PromptingInfo.load(source)
    check_prompting_model(source, info.d_P)
    return kind, info


def run_prompting(source: str | Path, cfg: EmbedderConfig) -> tuple[Path, PromptingInfo] | None:
    """The trained Prompting LLM of a training run, if it has one; a `pe train` run
    whose ``prompting/`` is gone is refused (:func:`trained_prompting`), as
    ``pe_core.load`` and ``pe align`` refuse it."""
    folder = trained_prompting(source)
    if folder is None:
        return None
    info = PromptingInfo.from_embedder_config(cfg)
    if (folder / PROMPTING_NAME).is_file():
        info = PromptingInfo.load(folder)
    if info.d_P != cfg.d_P:
        raise DimensionMismatchError(
            f"{folder}: {PROMPTING_NAME} says d_P={info.d_P}, the alignment d_P={cfg.d_P}"
        )
    return folder, info


def link_prompting(cfg: EmbedderConfig, prompting_id: str, revision: str | None) -> EmbedderConfig:
    """``cfg`` pointing at a published Prompting LLM."""
    return replace(cfg, prompting_id=prompting_id, prompting_revision=revision)


def prompting_name(name: str) -> str:
    """Where a run's Prompting LLM is published beside alignment ``name``:
    ``llama`` -> ``llama-prompting``, ``org/pe-llama`` -> ``org/pe-llama-prompting``."""
    head, sep, tail = name.rpartition("/")
    return f"{head}{sep}{tail[: 96 - len(PROMPTING_SUFFIX)]}{PROMPTING_SUFFIX}"


@dataclass
class Staged:
    """An artifact staged for publishing: its ``kind`` and the ``folder`` to publish."""

    kind: str
    folder: Path


def stage_for_publishing(
    source: str | Path, name: str, work: Path, publish_prompting: Callable[[Path, str], str]
) -> Staged:
    """Stage ``source`` (an artifact or training run) under ``work`` to publish as
    ``name``: the one staging sequence of every place pe publishes to.

    A run's trained Prompting LLM is staged first, as :func:`prompting_name`, and handed
    to ``publish_prompting(folder, prompting_name) -> revision``; the alignment is then
    staged pointing at that revision. Everything is checked before anything is staged,
    so a source that cannot be published leaves the destination unchanged.

    Example::

        staged = stage_for_publishing("runs/llama", "llama", tmp, lambda folder, n: "1")
        staged.kind, staged.folder            # ('alignment', tmp / 'alignment')
    """
    source = Path(source)
    kind, meta = read_source(source)
    folder = work / kind
    if kind == PROMPTING:
        stage_prompting(source, folder, name, meta)
        return Staged(kind, folder)
    prompting = run_prompting(source, meta)
    if prompting is not None:
        p_name, p_folder = prompting_name(name), work / "run-prompting"
        stage_prompting(prompting[0], p_folder, p_name, prompting[1])
        meta = link_prompting(meta, p_name, publish_prompting(p_folder, p_name))
    stage_alignment(meta, source, folder, name)
    return Staged(kind, folder)


# -- summaries -----------------------------------------------------------------------
def score(eval_results: dict[str, Any]) -> float | None:
    """One number per artifact for ``pe list``: the mean over tasks of ``main_score`` if a
    task reports one, else of its first numeric metric."""
    values = []
    for metrics in eval_results.values():
        if not isinstance(metrics, dict):
            continue
        numeric = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if numeric:
            values.append(float(numeric.get("main_score", next(iter(numeric.values())))))
    return sum(values) / len(values) if values else None


def summarize(folder: str | Path, manifest: Manifest) -> dict[str, Any]:
    """The row ``pe list`` shows for an artifact (metadata file hash-checked first)."""
    folder = Path(folder)
    if manifest.kind == ALIGNMENT:
        verify(folder, manifest, only=[CONFIG_NAME])
        cfg = EmbedderConfig.load(folder)
        return {
            "kind": ALIGNMENT,
            "backbone": cfg.backbone,
            "model_id": cfg.model_id,
            "prompting_id": cfg.prompting_id,
            "d_P": cfg.d_P,
            "d_B": cfg.d_B,
            "K": cfg.num_soft_tokens,
            "score": score(cfg.eval_results),
            "created": manifest.created,
        }
    verify(folder, manifest, only=[PROMPTING_NAME])
    info = PromptingInfo.load(folder)
    return {
        "kind": PROMPTING,
        "backbone": info.backbone,
        "model_id": info.base_model,
        "prompting_id": None,
        "d_P": info.d_P,
        "d_B": None,
        "K": info.num_soft_tokens,
        "score": score(info.eval_results),
        "created": manifest.created,
    }
