"""``export_onnx``: one ONNX graph per (backbone, alignment, instruction).

What the folder holds (written to a staging folder, checked, then renamed into place,
so a failed export leaves nothing behind):

* ``model.onnx`` + ``model.onnx.data``: ``input_ids``, ``attention_mask`` (int64,
  dynamic batch and length, either padding side) -> ``sentence_embedding`` (float32,
  unit length); the soft prompt is a constant inside;
* ``model_int8.onnx`` with ``int8=True``: every projection int8 with per-token
  activation scales over a smoothed copy of the function (:mod:`pe_registry.onnx_int8`),
  checked on real text;
* the backbone's tokenizer files and ``pe_config.json`` (the embedder config plus an
  ``"onnx"`` section: instruction, files, opset, versions, measured parity).

Which tool does what: ``torch.onnx.export(dynamo=True)`` builds the graph (the legacy
TorchScript exporter fails on these models); onnxscript's onnxruntime fusions rewrite it
(``optimize=True``, the default: :mod:`pe_registry.onnx_optimize`); our own rewrite
onto onnxruntime's ``QuantizeLinear`` + ``MatMulIntegerToFloat`` makes the int8 graph;
onnxruntime runs it.
optimum is not used: its exporter needs ``position_ids`` as an input and knows nothing of
a baked soft prompt, and its ``ORTOptimizer`` changes nothing measurable on these graphs.

Example::

    import pe_core
    from pe_registry.onnx_export import export_onnx
    model = pe_core.load(backbone="gemma", alignment="my-org/pe-align-gemma")
    export_onnx(model, "Retrieve a passage that answers the question", "onnx/", int8=True)
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pe_core.errors import ConfigError, DimensionMismatchError, ExportError
from pe_core.model.config import CONFIG_NAME
from pe_core.validate import output_folder
from pe_registry.int8_smooth import SMOOTH_ALPHA, smoothed
from pe_registry.onnx_embedder import INPUT_NAMES, ONNX_KEY, OUTPUT_NAME, make_session
from pe_registry.onnx_folder import seal_export
from pe_registry.onnx_int8 import INT8_MAX_DROP, calibration_texts, check_int8, quantize_int8

logger = logging.getLogger(__name__)

MODEL_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
PARITY_TOL = 1e-4  # max |onnx - torch| per coordinate of the fp32 graph


def export_onnx(
    embedder: Any,
    instruction: str | None,
    out_dir: str | Path,
    int8: bool = False,
    opset: int | None = None,
    plain: bool = False,
    overwrite: bool = False,
    verify: bool = True,
    optimize: bool = True,
    int8_max_drop: float = INT8_MAX_DROP,
    force_int8: bool = False,
) -> Path:
    """Export ``embedder`` with the soft prompt of ``instruction`` baked in.

    Args:
        embedder: a loaded :class:`~pe_core.model.embedder.PromptEmbedder`.
        instruction: the task instruction; None takes ``config.document_instruction``
            (what ``encode(instruction=None)`` uses).
        out_dir: folder to create (it must not exist or be empty, unless ``overwrite``).
        int8: also write ``model_int8.onnx`` and make it the default precision: every
            projection int8 with one activation scale per token
            (:mod:`pe_registry.onnx_int8`), both graphs exported from the backbone
            with SmoothQuant-style scales folded in (:mod:`pe_registry.int8_smooth`,
            calibrated on 64 texts of the local corpus' train split; the function is
            unchanged up to rounding and the caller's weights are restored after).
            The int8 graph is then compared with the fp32 one on a few real texts.
        opset: ONNX opset (None: the backbone plugin's ``onnx_opset``).
        plain: no soft prompt at all: the plain backbone, pooled and normalised
            (a baseline for measuring what the soft prompt costs).
        verify: compare onnxruntime with PyTorch on a fresh random padded batch and
            raise :class:`~pe_core.errors.ExportError` above ``1e-4``.
        optimize: fuse attention, RMSNorm and rotary embeddings into onnxruntime
            kernels and, with suffix + last-token pooling, compute the last layer for
            the pooled row only (:mod:`pe_registry.onnx_optimize`); kept only if it
            passes the parity check, else the unfused graph is written (with a
            warning). On by default: faster on the CPU (docs/benchmarks/inference.md);
            False writes the plain exported graph (standard ONNX ops only, for other runtimes).
        int8_max_drop: the largest ``1 - mean cosine`` of int8 to fp32 embeddings
            on those texts that is accepted (default ``0.01``).
        force_int8: write an int8 graph above ``int8_max_drop`` (with a warning).

    Raises:
        DimensionMismatchError: the alignment does not fit the backbone or the
            Prompting LLM; nothing is written.
        Int8DropError: the int8 graph's drop is above ``int8_max_drop`` and not
            ``force_int8``; nothing is written.

    Example::

        export_onnx(model, "Represent the text for retrieval", "onnx/")
    """
    require_onnx_extra()
    import torch

    from pe_registry.onnx_graph import EmbeddingGraph

    check_dimensions(embedder)
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite)
    if plain and instruction is not None:
        raise ConfigError("plain=True exports the backbone without a soft prompt: drop the "
                          "instruction (or plain)")
    if plain:
        instruction = None
    elif instruction is None:
        instruction = embedder.config.document_instruction
    opset = opset or embedder.backbone.spec.onnx_opset

    was_training = embedder.training
    embedder.eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    try:
        stage.chmod(0o755)  # mkdtemp makes it private; the export is an ordinary folder
        # --int8: both graphs come from the smoothed function (see int8_smooth), and the
        # caller's weights are put back after
        calibration = calibration_texts() if int8 else []
        smoothing = (smoothed(embedder, calibration, SMOOTH_ALPHA, instruction)
                     if int8 else contextlib.nullcontext(0))
        with smoothing as smoothed_groups:
            # traced where the weights are: moving them would move the caller's model too
            graph = EmbeddingGraph.from_embedder(embedder, instruction)
            raw = stage / "unfused" if optimize else stage
            raw.mkdir(exist_ok=True)
            with torch.no_grad():
                _export(graph, embedder.tokenizer, raw / MODEL_NAME, opset, embedder.device)
            fused = optimize and _fuse(raw / MODEL_NAME, stage / MODEL_NAME, embedder, instruction)
            if optimize:
                if not fused:  # fall back to the exported graph as is
                    for f in raw.iterdir():
                        os.replace(f, stage / f.name)
                shutil.rmtree(raw)
            info: dict[str, Any] = {
                "instruction": instruction,
                "plain": instruction is None,
                "files": {"fp32": MODEL_NAME},
                "default": "fp32",
                "inputs": list(INPUT_NAMES),
                "output": OUTPUT_NAME,
                "opset": opset,
                "padding_side": embedder.backbone.spec.padding_side,
                "num_soft_tokens": 0 if instruction is None else embedder.config.K,
                # text tokens the backbone's positions leave beside the soft prompt (None:
                # no limit recorded by the model); the graph itself does not check them
                "max_text_tokens": embedder._position_limit(instruction),
                "optimized": fused or False,
                "versions": _versions(),
            }
            if int8:
                quantize_int8(stage / MODEL_NAME, stage / INT8_NAME)
                info["files"]["int8"] = INT8_NAME
                info["default"] = "int8"
            if verify:
                info["parity"] = verify_parity(embedder, instruction, stage, info["files"])
            if int8:
                info["int8_smoothing"] = {"alpha": SMOOTH_ALPHA, "groups": smoothed_groups,
                                          "texts": len(calibration)}
                info["int8_check"] = check_int8(
                    embedder.tokenizer, info["padding_side"], stage, info["files"],
                    int8_max_drop, force_int8,
                )
        embedder.tokenizer.save_pretrained(stage)
        _write_config(stage, embedder.config.to_dict(), info)
        seal_export(stage)
        _publish(stage, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if was_training:
            embedder.train()
    logger.info("exported %s", out_dir)
    return out_dir


def check_dimensions(embedder: Any) -> None:
    """Raise :class:`DimensionMismatchError` unless prompting width -> alignment ->
    backbone width chain up (and the config says the same)."""
    d_B = embedder.backbone.d
    d_P = int(embedder.prompting.model.get_input_embeddings().weight.shape[1])
    a_P, a_B = (int(n) for n in embedder.alignment.weight.shape)
    if a_B != d_B:
        raise DimensionMismatchError(
            f"the alignment maps into d_B={a_B}, but backbone {embedder.config.backbone!r} "
            f"has width {d_B}: use an alignment trained for this backbone"
        )
    if a_P != d_P:
        raise DimensionMismatchError(
            f"the alignment expects a Prompting LLM of width d_P={a_P}, but the loaded one "
            f"has {d_P}: use the prompting model the alignment was trained with"
        )
    if (embedder.config.d_P, embedder.config.d_B) != (d_P, d_B):
        raise DimensionMismatchError(
            f"pe_config says d_P x d_B = {embedder.config.d_P} x {embedder.config.d_B}, the "
            f"models are {d_P} x {d_B}"
        )


def require_onnx_extra() -> None:
    """The packages an export needs (torch's dynamo exporter writes through onnxscript)."""
    from pe_core.extras import require_extra

    require_extra(["onnx", "onnxscript", "onnxruntime"], "pe-registry[onnx]", "ONNX export")


def check_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ConfigError(f"{out_dir} is not empty: choose a new folder or pass --overwrite")
    output_folder(out_dir, "export folder")  # under a file, or not writable


def _export(graph: Any, tokenizer: Any, path: Path, opset: int, device: Any) -> None:
    import torch

    ids, mask = (torch.from_numpy(a).to(device) for a in example_batch(tokenizer, 3, seed=0))
    # DYNAMIC, not named Dims: named ones make torch.export reject the guards transformers'
    # mask code creates (e.g. min(a + b*seq, ...)) though they hold for every length
    dyn = torch.export.Dim.DYNAMIC
    dynamic = {name: {0: dyn, 1: dyn} for name in INPUT_NAMES}
    # it logs one warning per torchvision op it cannot register: noise for text models
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about transformers internals
        try:
            torch.onnx.export(
                graph,
                (ids, mask),
                str(path),
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic,
                opset_version=opset,
                external_data=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; ours is typed
            raise ExportError(f"torch.onnx.export failed: {exc}") from exc
        finally:
            registration.setLevel(level)


def _fuse(src: Path, dst: Path, embedder: Any, instruction: str | None) -> dict[str, int]:
    """Fused graph at ``dst`` and its fusion counts, or {} (nothing written) when the
    fusion fails or changes the result."""
    from pe_registry.onnx_optimize import fuse_for_onnxruntime

    try:
        counts = fuse_for_onnxruntime(src, dst)
        verify_parity(embedder, instruction, dst.parent, {"fp32": dst.name})
        return counts
    except Exception as exc:  # onnxscript's rewriter raises many types
        for f in (dst, dst.with_name(dst.name + ".data")):
            f.unlink(missing_ok=True)
        warnings.warn(f"--optimize: keeping the unfused graph ({exc})", stacklevel=3)
        return {}


def example_batch(
    tokenizer: Any, batch: int = 4, seed: int | None = None, max_len: int = 24, side: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """Random token ids with varied lengths (1 .. ``max_len``), padded on ``side``; the
    longest row is full length so every column has a real token."""
    rng = np.random.default_rng(seed)
    vocab = len(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    lengths = rng.integers(1, max_len + 1, size=batch)
    lengths[rng.integers(batch)] = max_len
    ids = np.full((batch, max_len), pad, dtype=np.int64)
    mask = np.zeros((batch, max_len), dtype=np.int64)
    for row, n in enumerate(lengths):
        cols = slice(0, n) if side == "right" else slice(max_len - n, max_len)
        ids[row, cols] = rng.integers(0, vocab, size=n)
        mask[row, cols] = 1
    return ids, mask


def verify_parity(
    embedder: Any, instruction: str | None, folder: Path, files: dict[str, str]
) -> dict[str, Any]:
    """Run the written fp32 graph on a fresh random padded batch (both padding sides)
    and compare with the torch embedder's own path (the suffix over a KV cache, which the
    graph does not use: two implementations must agree)."""
    import torch

    seed = secrets.randbits(32)
    result: dict[str, Any] = {"seed": seed, "tolerance": PARITY_TOL}
    session = make_session(folder / files["fp32"], ["CPUExecutionProvider"])
    worst = 0.0
    for n, side in enumerate(("right", "left")):
        ids, mask = example_batch(embedder.tokenizer, batch=4, seed=seed + n, side=side)
        with torch.no_grad():
            ref = _torch_reference(embedder, instruction, ids, mask)
        feeds = {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask}
        fp32 = session.run([OUTPUT_NAME], feeds)[0]
        worst = max(worst, float(np.abs(fp32 - ref).max()))
    result["fp32_max_abs_diff"] = worst
    if worst > PARITY_TOL:
        raise ExportError(
            f"the ONNX graph differs from PyTorch by {worst:.2e} (> {PARITY_TOL:g}) on a "
            f"random padded batch (seed {seed}); nothing was written"
        )
    return result


def _torch_reference(
    embedder: Any, instruction: str | None, ids: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    import torch

    t_ids = torch.from_numpy(ids).to(embedder.device)
    t_mask = torch.from_numpy(mask).to(embedder.device)
    soft = embedder.cached_soft_prompt(instruction)
    if soft is not None:
        soft = soft.expand(len(ids), *soft.shape)
    return embedder(t_ids, t_mask, soft).float().cpu().numpy()


def _write_config(folder: Path, config: dict[str, Any], info: dict[str, Any]) -> None:
    import json

    data = {**config, ONNX_KEY: info}
    (folder / CONFIG_NAME).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _publish(stage: Path, out_dir: Path, overwrite: bool) -> None:
    """Rename the finished staging folder into place (atomic on one file system)."""
    if out_dir.is_dir():
        if any(out_dir.iterdir()) and overwrite:
            old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
            os.rename(out_dir, old)
            os.rename(stage, out_dir)
            shutil.rmtree(old, ignore_errors=True)
            return
        out_dir.rmdir()  # empty
    os.rename(stage, out_dir)


def _versions() -> dict[str, str]:
    import onnx
    import torch
    import transformers

    from pe_registry.onnx_embedder import import_onnxruntime

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": import_onnxruntime().__version__,
    }
