"""The ``--int8`` graph: which matrix multiplies become int8, and the check that it still
embeds like the fp32 graph on real text.

onnxruntime's ``quantize_dynamic`` stores int8 weights (one scale per output channel)
and quantises each MatMul's input at run time with **one scale per tensor**: a single
large value anywhere in the batch coarsens every other value's step. Decoder LLMs carry
such values ("massive activations": a few channels of a few tokens, hundreds of times
the rest), and two kinds of projection read them:

* the MLP's down projection (``mlp.down_proj``), whose input is the SwiGLU product where
  those activations are made;
* the attention's query/key/value projections, which read the input RMSNorm of a
  residual stream that carries them from then on.

Measured on SmolLM2-135M (30 layers, 64 local test texts, cosine of int8 to fp32
embeddings, mean / min): everything int8 0.906 / 0.778 (retrieval MRR@10 down by half);
down projections fp32 0.985 / 0.950; down + q/k/v projections fp32 0.9965 / 0.989; also
excluding the output projection, the first or last two layers, gate/up or the embedding
table's Gather changed the cosine by less than 0.003. The remaining projections (gate,
up, output) are about 60 % of the multiply work: int8 runs 1.96x torch eager at batch 32
instead of ~4x, and the retrieval score stays within 2 of 128 queries of fp32's. Gemma 3
270M is not fixed by it (cosine 0.980 / 0.842, MRR@10 down 30 %): there the check below
refuses the graph at the default bound.

Nodes are picked by the module they were traced from (the exporter's
``pkg.torch.onnx.name_scopes`` metadata, which survives the fusions), so the recipe
reads the same for every family whose modules carry transformers' usual names (Llama,
Mistral, Qwen, Gemma). The nodes that run for the pooled row only stay fp32 too: one row
per text costs next to nothing there, and int8 would only add error next to the output.

The check (:func:`check_int8`): both graphs embed a small set of real texts (the local
corpus' dev split) and the export is refused with :class:`~pe_core.errors.Int8DropError`
when ``1 - mean cosine`` exceeds the bound, unless forced (then it warns).

Example::

    quantize_int8(Path("onnx/model.onnx"), Path("onnx/model_int8.onnx"))
    check_int8(embedder.tokenizer, "right", Path("onnx/"), max_drop=0.01)
"""

from __future__ import annotations

import ast
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_core.errors import Int8DropError

# modules (by their path's tail) whose MatMuls stay fp32 in the int8 graph
KEEP_FP32_MODULES = ("mlp.down_proj", "self_attn.q_proj", "self_attn.k_proj",
                     "self_attn.v_proj")
INT8_MAX_DROP = 0.01  # largest allowed 1 - mean cosine(int8, fp32) on the check texts
CHECK_TEXTS = 32  # half documents, half queries of the local corpus' dev split
CHECK_MAX_LENGTH = 128
CHECK_BATCH = 8  # the activation scales are per batch: int8 output depends on the batch
_TWO_GB = 2**31 - 2**20  # protobuf's limit: bigger graphs keep weights outside


def quantize_int8(src: Path, dst: Path, keep_fp32: Sequence[str] = KEEP_FP32_MODULES) -> Path:
    """Dynamic int8 quantisation of ``src`` into ``dst``: QInt8 weights with one scale per
    output channel, activations quantised at run time, every MatMul int8 except those of
    the ``keep_fp32`` modules and of the pooled-row-only nodes.

    Measured on these graphs: QInt8 is ~1.5x faster than fp32 on the CPU, QUInt8 only
    ~1.2x; ``quant_pre_process`` fails on dynamo graphs and gains nothing. Only
    ``MatMul`` and ``Gather`` (the embedding table) are quantised: the default op list
    would also turn an opset-23 ``Attention`` into the unrelated contrib ``QAttention``
    and break ``--opset 23`` exports.

    Example::

        quantize_int8(Path("onnx/model.onnx"), Path("onnx/model_int8.onnx"), keep_fp32=())
    """
    import onnx

    from pe_registry.onnx_embedder import import_onnxruntime

    import_onnxruntime()  # telemetry off before onnxruntime.quantization imports it
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src), load_external_data=False).graph
    excluded = fp32_nodes(graph, keep_fp32)
    big = sum(f.stat().st_size for f in src.parent.glob(src.name + "*")) > _TWO_GB
    root = logging.getLogger()
    quiet = _DropPreprocessAdvice()
    root.addFilter(quiet)  # it advises quant_pre_process, which fails on these graphs
    try:
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, use_external_data_format=big,
                         per_channel=True, nodes_to_exclude=excluded,
                         op_types_to_quantize=["MatMul", "Gather"])
    finally:
        root.removeFilter(quiet)
    return dst


def fp32_nodes(graph: Any, keep_fp32: Sequence[str] = KEEP_FP32_MODULES) -> list[str]:
    """Names of the nodes of ``graph`` (an ``onnx.GraphProto``) that stay fp32: those
    traced from a module whose path ends with one of ``keep_fp32``, and the pooled-row
    ones."""
    from pe_registry.onnx_optimize import POOLED_ROW_PREFIX

    tails = re.compile(r"(^|\.)(" + "|".join(re.escape(m) for m in keep_fp32) + r")$")
    names = []
    for node in graph.node:
        if node.name.startswith(POOLED_ROW_PREFIX):
            names.append(node.name)
        elif keep_fp32 and any(tails.search(scope) for scope in _scopes(node)):
            names.append(node.name)
    return names


def _scopes(node: Any) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                return []
    return []


class _DropPreprocessAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def check_texts(n: int = CHECK_TEXTS) -> list[str]:
    """``n`` real texts: documents and queries of the local corpus' dev split (the test
    split stays for scoring)."""
    from pe_core.data import load_pairs

    pairs = load_pairs("dev")[: -(-n // 2)]
    return ([p.document for p in pairs] + [p.query for p in pairs])[:n]


def token_batches(tokenizer: Any, texts: Sequence[str], batch: int, max_length: int,
                  padding_side: str) -> list[Any]:
    """``texts`` as padded batches (length-sorted, with each row's place in ``order``);
    texts over ``max_length`` are cut on purpose, without the truncation warning."""
    from pe_core.batching import encode_batches

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*longer than max_length")
        return list(encode_batches(tokenizer, list(texts), batch, max_length, padding_side,
                                   False))


def run_batches(session: Any, batches: Sequence[Any]) -> np.ndarray:
    """The graph's embeddings of :func:`token_batches`' texts, in the texts' order."""
    from pe_registry.onnx_embedder import INPUT_NAMES, OUTPUT_NAME

    chunks, order = [], []
    for batch in batches:
        feeds = {INPUT_NAMES[0]: batch.input_ids.numpy(),
                 INPUT_NAMES[1]: batch.attention_mask.numpy()}
        chunks.append(session.run([OUTPUT_NAME], feeds)[0])
        order.extend(batch.order)
    stacked = np.concatenate(chunks)
    out = np.empty_like(stacked)
    out[order] = stacked
    return out


def check_int8(
    tokenizer: Any, padding_side: str, folder: Path, files: dict[str, str],
    max_drop: float = INT8_MAX_DROP, force: bool = False, texts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Embed ``texts`` (default: :func:`check_texts`) with the fp32 and the int8 graph in
    ``folder`` and compare them; returns what was measured.

    Raises:
        Int8DropError: ``1 - mean cosine`` is above ``max_drop`` and not ``force``
            (with ``force`` it warns instead).

    Example::

        check_int8(tok, "right", Path("stage/"), {"fp32": "model.onnx",
                   "int8": "model_int8.onnx"}, max_drop=0.01)["mean_cosine"]
    """
    from pe_registry.onnx_embedder import make_session

    texts = list(texts) if texts is not None else check_texts()
    batches = token_batches(tokenizer, texts, CHECK_BATCH, CHECK_MAX_LENGTH, padding_side)
    vecs = {precision: run_batches(make_session(folder / files[precision],
                                                ["CPUExecutionProvider"]), batches)
            for precision in ("fp32", "int8")}
    cosines = (vecs["int8"] * vecs["fp32"]).sum(-1)
    drop = 1.0 - float(cosines.mean())
    result = {"texts": len(texts), "mean_cosine": float(cosines.mean()),
              "min_cosine": float(cosines.min()), "drop": drop, "max_drop": max_drop,
              "forced": False}
    if drop > max_drop:
        message = (
            f"the int8 graph embeds {len(texts)} real texts at mean cosine "
            f"{cosines.mean():.4f} (min {cosines.min():.4f}) to the fp32 graph: a drop of "
            f"{drop:.4f}, above the bound {max_drop:g}"
        )
        if not force:
            raise Int8DropError(
                f"{message}; nothing was written. Export without --int8 (fp32 keeps the "
                "score), raise the bound with --int8-max-drop, or pass --force-int8 to "
                "write it anyway"
            )
        result["forced"] = True
        warnings.warn(f"{message}; written anyway (--force-int8)", stacklevel=3)
    return result
