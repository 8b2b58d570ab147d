"""The ``--int8`` graph: which matrix multiplies become int8, how their inputs are
quantised, and the check that it still embeds like the fp32 graph on real text.

Decoder LLMs carry a few activation values hundreds of times the rest ("massive
activations": a few channels of a few tokens). onnxruntime's ``quantize_dynamic``
quantises each MatMul's input with **one scale per tensor**, so one such value anywhere
in the batch coarsens every other value's step, and a text's int8 embedding depends on
the batch it runs in; on a real LLM that loses the score, and keeping the outlier
projections fp32 instead loses the speed (measurements: docs/benchmarks/inference.md,
"Measurements behind the int8 recipe").

The recipe now, two parts, every projection int8:

* **per-row (per-token) activation scales** (:func:`per_token_matmuls`): each row of a
  MatMul's input gets its own scale, quantised once by ``QuantizeLinear`` per input
  tensor (q/k/v share one, gate/up another) and multiplied back after onnxruntime's
  ``MatMulIntegerToFloat``; a large value coarsens only its own token, and a text embeds
  the same in any batch;
* **smoothing** (:mod:`pe_registry.int8_smooth`, applied by ``export_onnx`` before the
  export): per-channel scales folded into the norms and up projections flatten the
  outlier channels that per-row scales cannot.
* **weights held as uint8** (:data:`UNSIGNED_WEIGHTS`): x86 CPUs without VNNI add pairs
  of u8 x s8 products into a saturating int16, so int8 weights gave CPU-dependent
  results; u8 x u8 is exact everywhere.

Each part was needed for the score; what each form measured is on the same docs page.

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
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pe_core.errors import Int8DropError

# modules (by their path's tail) whose MatMuls stay fp32 in the int8 graph
KEEP_FP32_MODULES: tuple[str, ...] = ()  # with smoothing and per-row scales, none
# never int8: the rotary tables' positions x frequencies product (an angle error there
# moves every later attention score)
ALWAYS_FP32_MODULES = ("rotary_emb",)
INT8_MAX_DROP = 0.01  # largest allowed 1 - mean cosine(int8, fp32) on the check texts
# How the weights are held. x86 CPUs without VNNI run onnxruntime's u8 x s8 kernels
# through VPMADDUBSW, which adds two products into a *saturating* int16: with
# activations up to 255 (uint8 around 128) and int8 weights up to 127 a pair reaches
# 64,770 and is clipped to 32,767 (on an AVX2-only AMD EPYC one projection came out off
# by up to 212 against the exact integer product, and the graph's result depended on the
# CPU). Weights held as uint8 around 128 (u8 x u8) go through kernels that widen to 16
# bits before multiplying, so every CPU computes the exact product with all 8 bits, at
# no cost in speed and with a better score than 7-bit weights (docs/benchmarks/inference.md,
# "Measurements behind the int8 recipe").
ACT_MAX = 127
WEIGHT_MAX = 127
UNSIGNED_WEIGHTS = True
CALIBRATION_TEXTS = 64  # half documents, half queries of the local corpus' train split
CHECK_TEXTS = 32  # half documents, half queries of the local corpus' dev split
CHECK_MAX_LENGTH = 128
CHECK_BATCH = 8  # the batch the check texts run in (per-row scales: any size reads alike)


def quantize_int8(src: Path, dst: Path, keep_fp32: Sequence[str] = KEEP_FP32_MODULES,
                  act_max: int = ACT_MAX, weight_max: int = WEIGHT_MAX,
                  unsigned_weights: bool = UNSIGNED_WEIGHTS) -> Path:
    """Int8 ``src`` into ``dst``: every MatMul with a constant weight becomes
    onnxruntime's ``MatMulIntegerToFloat`` over 8-bit weights (one scale per output
    channel, held as uint8: :data:`UNSIGNED_WEIGHTS`) and activations quantised at run
    time with **one scale per row** (per token), except the MatMuls of the
    ``keep_fp32`` modules, of the rotary tables and of the pooled-row-only nodes.
    MatMuls that read the same tensor share one quantisation of it. The embedding
    table's Gather stays fp32 (a lookup: no multiply work to save).

    Per-row scales make each text's embedding independent of the batch it runs in, and
    a token with large values coarsens only its own row, for about the speed of
    per-tensor scales (docs/benchmarks/inference.md).

    Example::

        quantize_int8(Path("onnx/model.onnx"), Path("onnx/model_int8.onnx"), keep_fp32=())
    """
    import onnx

    model = onnx.load(str(src))
    excluded = set(fp32_nodes(model.graph, tuple(keep_fp32) + ALWAYS_FP32_MODULES))
    per_token_matmuls(model, excluded, act_max, weight_max, unsigned_weights)
    for old in dst.parent.glob(dst.name + "*"):  # the external-data writer appends
        old.unlink()
    onnx.save(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
              location=dst.name + ".data", size_threshold=1024)
    return dst


def per_token_matmuls(model: Any, excluded: set[str], act_max: int = ACT_MAX,
                      weight_max: int = WEIGHT_MAX,
                      unsigned_weights: bool = UNSIGNED_WEIGHTS) -> int:
    """Rewrite ``model`` (an ``onnx.ModelProto``, weights loaded) in place: each MatMul
    ``X @ W`` with a 2-D constant ``W`` and not in ``excluded`` becomes
    ``MatMulIntegerToFloat(q(X), Wq) * s(X)``, where ``q``/``s`` quantise ``X`` per row
    to ``[-act_max, act_max]`` (held as uint8 around ``act_max + 1``) and ``Wq`` holds
    ``W`` per output channel in ``[-weight_max, weight_max]``, as uint8 around 128 with
    ``unsigned_weights`` (u8 x u8 kernels: exact on every CPU), else as int8 (u8 x s8:
    then keep ``2 * (2 * act_max + 1) * weight_max <= 32767``, or CPUs without VNNI
    saturate; see :data:`UNSIGNED_WEIGHTS`). Returns the number of MatMuls rewritten."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    targets = [n for n in graph.node
               if n.op_type == "MatMul" and n.domain == "" and n.name not in excluded
               and n.input[1] in inits and len(inits[n.input[1]].dims) == 2
               and inits[n.input[1]].data_type == TensorProto.FLOAT]
    if not targets:
        return 0
    wanted = {id(n) for n in targets}
    consts = {
        "pe_q_inv": np.array(1 / act_max, np.float32), "pe_q_eps": np.array(1e-30, np.float32),
        "pe_q_zero": np.array(0, np.float32), "pe_q_mid": np.array(act_max + 1, np.float32),
        "pe_q_one": np.array(1, np.float32), "pe_q_zp": np.array(act_max + 1, np.uint8),
        "pe_q_rows": np.array([1], np.int64),
    }
    new_inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    done: dict[str, tuple[str, str, str]] = {}  # input -> (quantised, row scale, lead shape)
    nodes: list[Any] = []

    def quantise(x: str, k: int, tag: str) -> tuple[str, str, str]:
        """Nodes that turn ``x`` (..., k) into uint8 rows (M, k) and their scales (M, 1)."""
        shape_k = f"{tag}_k"
        new_inits.append(numpy_helper.from_array(np.array([-1, k], np.int64), shape_k))
        n = lambda op, ins, outs, **kw: nodes.append(  # noqa: E731
            helper.make_node(op, ins, outs, name=f"{tag}_{op}_{len(nodes)}", **kw))
        n("Reshape", [x, shape_k], [f"{tag}_x2"])
        n("Abs", [f"{tag}_x2"], [f"{tag}_abs"])
        if opset >= 18:
            n("ReduceMax", [f"{tag}_abs", "pe_q_rows"], [f"{tag}_max"], keepdims=0)
        else:
            n("ReduceMax", [f"{tag}_abs"], [f"{tag}_max"], axes=[1], keepdims=0)
        n("Mul", [f"{tag}_max", "pe_q_inv"], [f"{tag}_s0"])
        n("Max", [f"{tag}_s0", "pe_q_eps"], [f"{tag}_s"])
        n("Mul", [f"{tag}_s", "pe_q_zero"], [f"{tag}_z0"])
        n("Add", [f"{tag}_z0", "pe_q_mid"], [f"{tag}_z1"])
        n("Cast", [f"{tag}_z1"], [f"{tag}_zp"], to=TensorProto.UINT8)
        n("QuantizeLinear", [f"{tag}_x2", f"{tag}_s", f"{tag}_zp"], [f"{tag}_q"], axis=0)
        n("Unsqueeze", [f"{tag}_s", "pe_q_rows"], [f"{tag}_scale"])
        n("Shape", [x], [f"{tag}_lead"], end=-1)
        return f"{tag}_q", f"{tag}_scale", f"{tag}_lead"

    for node in graph.node:
        if id(node) not in wanted:
            nodes.append(node)
            continue
        x, w_name = node.input[0], node.input[1]
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        tag = f"pe_q{len(done)}"
        if x not in done:
            done[x] = quantise(x, w.shape[0], tag)
        xq, xs, lead = done[x]
        scale = np.maximum(np.abs(w).max(0), 1e-30) / weight_max
        wq = np.clip(np.round(w / scale), -weight_max, weight_max)
        wzp = np.full(w.shape[1], 128 if unsigned_weights else 0)
        wtype = np.uint8 if unsigned_weights else np.int8
        name = node.name or w_name
        new_inits += [numpy_helper.from_array((wq + wzp).astype(wtype), f"{w_name}_int8"),
                      numpy_helper.from_array(scale.astype(np.float32), f"{w_name}_scale"),
                      numpy_helper.from_array(wzp.astype(wtype), f"{w_name}_zp"),
                      numpy_helper.from_array(np.array([w.shape[1]], np.int64), f"{w_name}_n")]
        nodes += [
            helper.make_node("MatMulIntegerToFloat",
                             [xq, f"{w_name}_int8", "pe_q_one", f"{w_name}_scale", "pe_q_zp",
                              f"{w_name}_zp"], [f"{name}_int"], name=f"{name}_int8",
                             domain="com.microsoft"),
            helper.make_node("Mul", [f"{name}_int", xs], [f"{name}_rows"], name=f"{name}_rescale"),
            helper.make_node("Concat", [lead, f"{w_name}_n"], [f"{name}_shape"], axis=0,
                             name=f"{name}_shape"),
            helper.make_node("Reshape", [f"{name}_rows", f"{name}_shape"], [node.output[0]],
                             name=f"{name}_out"),
        ]
        uses[w_name] -= 1
    dead = {name for name, count in uses.items() if count == 0 and name in inits}
    keep = [i for i in graph.initializer if i.name not in dead]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(targets)


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


def calibration_texts(n: int = CALIBRATION_TEXTS) -> list[str]:
    """``n`` real texts for the smoothing scales: documents and queries of the local
    corpus' *train* split (the check reads dev, the benchmarks test)."""
    from pe_core.data import load_pairs

    pairs = load_pairs("train")[: -(-n // 2)]
    return ([p.document for p in pairs] + [p.query for p in pairs])[:n]


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
    from pe_core.model.batching import encode_batches

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
