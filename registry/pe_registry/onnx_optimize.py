"""The default export's graph pass (``pe export onnx``; ``--no-optimize`` skips it).

The exporter already depends on onnxscript, whose ``ort_fusions`` rewrite dynamo graphs
into onnxruntime contrib ops. We apply the subset that keeps pe's semantics:

* RMSNorm -> ``SimplifiedLayerNormalization``, residual + RMSNorm ->
  ``SkipSimplifiedLayerNormalization``, rotary embedding -> ``RotaryEmbedding``,
* scaled-dot-product attention -> ``MultiHeadAttention`` (the padding mask stays an
  additive attention bias, so any padding side and the suffix layout
  ``[text ; pad ; soft]`` stay exact),

and then one rewrite of our own, :func:`pooled_row_only`: with ``[text ; soft]`` and
last-token pooling (pe's default) the output reads one row of the last hidden state, so
the last layer after its attention (output projection, residual, norms, MLP) runs for
that row only. Exact, not an approximation: the kept row sees the same arithmetic. It
saves about 1/num_layers of the work (a quarter on the 4-layer benchmark model, 3-4 %
on a 24-32-layer model).

Left out on purpose: the ``GroupQueryAttention`` fusion (``optimize_for_ort`` applies it
first). GQA describes padding by per-row sequence lengths only, so it cannot represent a
mask with holes and is wrong on padded batches. The exporter checks parity
after fusing anyway and falls back to the unfused graph when it fails. Gemma 2's
soft-capped attention has no onnxruntime kernel: its graph gets the norm and rotary
fusions only (and keeps its full last layer, the rewrite needs the fused attention).

Sessions flush denormals (``make_session``): onnxruntime's CPU softmax turns the -inf
mask into denormal floats, which slow every later multiply. ``optimum``'s
``ORTOptimizer`` is not used: on these graphs it fuses only RMSNorm, which the
onnxruntime session does by itself. Where the time goes, per op, and what each step
saved: docs/benchmarks/inference.md, "Measurements behind the ONNX graph".

The fused graph uses ``com.microsoft`` ops: onnxruntime (CPU/CUDA) runs it, other ONNX
runtimes may not (export with ``--no-optimize`` for those).

Example::

    counts = fuse_for_onnxruntime(Path("raw/model.onnx"), Path("out/model.onnx"))
    counts["MultiHeadAttention"]      # one per layer when the pattern matched
    counts["PooledRowOnlyLastLayer"]  # 1 when the last layer runs for the pooled row
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fuse_for_onnxruntime(src: Path, dst: Path) -> dict[str, int]:
    """Read ``src``, fuse, write ``dst`` (+ ``dst.data``); returns fusion counts.

    ``src`` and ``dst`` must not share an external-data file name: the weights are read
    lazily from ``src``'s while ``dst``'s is written.
    """
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import optimizer
    from onnxscript.rewriter import ort_fusions, rewrite
    from onnxscript.rewriter.ort_fusions import (
        cos_sin_cache,
        mha,
        rms_normalization,
        rotary_embedding,
        sdpa,
        sdpa_via_mha,
        shape_optimization,
        skip_normalization,
    )

    model = ir.load(src)
    # the fusions match on static shape facts: infer them and fold first
    common.ShapeInferencePass()(model)
    optimizer.optimize(model)
    shape_optimization.rules.apply_to_model(model)
    optimizer.optimize(model)
    counts = {
        "SimplifiedLayerNormalization": rms_normalization.fuse_rms_normalization(model),
        "SkipSimplifiedLayerNormalization": skip_normalization.fuse_skip_rms_normalization(
            model
        ),
        "RotaryEmbedding": rotary_embedding.fuse_rotary_embedding(model),
        "CosSinCache": cos_sin_cache.fuse_cos_sin_cache(model),
    }
    common.CommonSubexpressionEliminationPass()(model)
    sdpa.fuse_sdpa(model, apply_shape_inference=True)
    counts["MultiHeadAttention"] = mha.fuse_mha2(model)  # no past key/values here
    # an SDPA the MHA pattern did not take (e.g. Qwen3's norm on q/k) is a placeholder
    # op with no kernel: it must become MultiHeadAttention too
    counts["MultiHeadAttention"] += sdpa_via_mha.replace_sdpa_by_mha(model)
    optimizer.optimize(model)
    rewrite(model, ort_fusions.ORT_PATTERN_REWRITE_RULES)
    counts["PooledRowOnlyLastLayer"] = pooled_row_only(model)
    common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    common.RemoveInitializersFromInputsPass()(model)
    ir.save(model, dst, external_data=dst.name + ".data")
    return counts


POOLED_ROW_PREFIX = "pooled_row/"  # names of the nodes that run for the pooled row only

# ops whose output row i (along the sequence axis) depends on input row i only, given
# that their other inputs are constants (weights, norms' gammas, scalars)
_ROW_WISE = {
    ("", "MatMul"), ("", "Add"), ("", "Sub"), ("", "Mul"), ("", "Div"), ("", "Sigmoid"),
    ("", "Tanh"), ("", "Cast"), ("", "Gelu"), ("", "Erf"), ("", "Pow"), ("", "Neg"),
    ("", "Sqrt"), ("", "Reciprocal"), ("", "Relu"), ("", "Softplus"), ("", "Identity"),
    ("com.microsoft", "SkipSimplifiedLayerNormalization"),
    ("com.microsoft", "SimplifiedLayerNormalization"), ("", "SimplifiedLayerNormalization"),
    ("", "RMSNormalization"), ("com.microsoft", "QuickGelu"), ("com.microsoft", "FastGelu"),
    ("com.microsoft", "Gelu"), ("com.microsoft", "BiasGelu"),
}


def pooled_row_only(model: Any) -> int:
    """Compute the last layer for the pooled row only; returns 1 if rewritten, else 0.

    With ``[text ; soft]`` and last-token pooling the output reads one row of the last
    hidden state: ``hidden[:, -1]``. Every row of the final layer after its attention is
    computed independently (projection, residual, norm, MLP), and attention needs all
    rows only as keys and values. So slicing the last row out of the attention's query
    and mask rows and out of the residual stream feeding that layer gives the same vector
    while skipping the rest of the final layer's output projection, MLP and norms (exact:
    the same arithmetic on the row that is kept). Saves about 1/num_layers of the work.

    Only this exact shape is rewritten: the pooling is ``Gather(axis=1, index=-1)`` of
    a (batch, seq, width) tensor, the region between the last ``MultiHeadAttention`` and
    that Gather holds only row-wise ops from :data:`_ROW_WISE` whose results feed nothing
    else, and the attention is not causal by attribute. Anything else is left alone.
    """
    import numpy as np
    import onnx_ir as ir

    graph = model.graph
    nodes = list(graph)
    pool = _pooling_gather(graph)
    if pool is None:
        return 0
    attention = [n for n in nodes if (n.domain, n.op_type) == ("com.microsoft",
                                                                 "MultiHeadAttention")]
    if not attention:
        return 0
    mha = attention[-1]
    if mha.attributes.get_int("unidirectional", 0) or len(mha.inputs) < 3 or any(
        v is not None for v in mha.inputs[6:]
    ) or mha.inputs[1] is None:  # past key/values or packed QKV: not this shape
        return 0
    region = _descendants(mha) & _ancestors(pool)
    region -= {mha, pool}
    if not region:
        return 0
    outside: list[tuple[ir.Node, int]] = []  # (consumer, input index) of residual rows
    reshapes: list[tuple[ir.Node, int]] = []  # Reshape to (B, S, width): (node, width)
    for node in region:
        if node.op_type == "Reshape" and node.domain == "":
            keeps_rows = _keeps_batch_and_seq(node)
            if keeps_rows is None:
                return 0
            if keeps_rows > 0:
                reshapes.append((node, keeps_rows))
            inputs = node.inputs[:1]
        elif (node.domain, node.op_type) in _ROW_WISE:
            inputs = node.inputs
        else:
            return 0
        if node.op_type == "MatMul" and not _is_const(node.inputs[1]):
            return 0
        for out in node.outputs:
            if any(user not in region and user is not pool for user, _ in out.uses()):
                return 0
            if out.is_graph_output():
                return 0
        for i, value in enumerate(inputs):
            if _is_const(value) and value.shape is not None and len(value.shape) >= 3 and (
                value.shape[-2] != 1
            ):
                return 0  # a constant with a sequence axis: not row-wise
            if value is None or _is_const(value) or value.producer() in region:
                continue
            if value.producer() is mha:
                continue
            if value.shape is None or len(value.shape) != 3:
                return 0  # a runtime input that is not a (batch, seq, width) tensor
            outside.append((node, i))
    if any(user not in region for out in mha.outputs for user, _ in out.uses()):
        return 0

    def last_row(value: ir.Value, axis: int, before: ir.Node) -> ir.Value:
        consts = [
            ir.Value(name=f"{value.name}_last_row_{k}", const_value=ir.tensor(
                np.array([x], dtype=np.int64), name=f"{value.name}_last_row_{k}"))
            for k, x in (("start", -1), ("end", np.iinfo(np.int64).max), ("axis", axis))
        ]
        for c in consts:
            graph.register_initializer(c)
        node = ir.node("Slice", [value, *consts], name=f"{value.name}_last_row")
        graph.insert_before(before, node)
        out = node.outputs[0]
        if value.dtype is not None and value.shape is not None:
            out.dtype = value.dtype
            out.shape = ir.Shape([1 if i == axis else d for i, d in enumerate(value.shape)])
        return out

    for node in region:  # named, so int8 quantisation can leave them in fp32
        node.name = f"{POOLED_ROW_PREFIX}{node.name}"
    for node in (mha, *region):  # one row now: stale shapes would mislead onnxruntime
        for out in node.outputs:
            if out.shape is not None and len(out.shape) == 3:
                out.shape = ir.Shape([out.shape[0], 1, out.shape[2]])
            elif out.shape is not None:
                out.shape = None
    query = _query_projection(mha)
    if query is None:
        mha.replace_input_with(0, last_row(mha.inputs[0], 1, mha))
    else:  # slice before the projection: q = Rotary(x @ W_q, positions) for one row
        rotary, matmul = query
        rotary.replace_input_with(1, last_row(rotary.inputs[1], 1, rotary))
        matmul.replace_input_with(0, last_row(matmul.inputs[0], 1, matmul))
        for node in (matmul, rotary):
            node.name = f"{POOLED_ROW_PREFIX}{node.name}"
            node.outputs[0].shape = None
    if len(mha.inputs) > 5 and mha.inputs[5] is not None:  # additive mask: (B, N, S, T)
        mha.replace_input_with(5, last_row(mha.inputs[5], 2, mha))
    for node, i in outside:
        node.replace_input_with(i, last_row(node.inputs[i], 1, node))
    for node, width in reshapes:  # its shape was computed from the full sequence length
        shape = ir.Value(name=f"{node.name}_rows_shape", const_value=ir.tensor(
            np.array([0, 0, width], dtype=np.int64), name=f"{node.name}_rows_shape"))
        graph.register_initializer(shape)
        node.replace_input_with(1, shape)
        node.attributes.pop("allowzero", None)
    return 1


def _query_projection(mha: Any) -> tuple[Any, Any] | None:
    """(RotaryEmbedding, MatMul) when the attention's query is exactly
    ``RotaryEmbedding(x @ W_q, position_ids (B, S), cos, sin)`` on (B, S, hidden) and
    both feed nothing else; None otherwise (then the query is sliced after them)."""
    rotary = mha.inputs[0].producer()
    if rotary is None or (rotary.domain, rotary.op_type) != ("com.microsoft",
                                                             "RotaryEmbedding"):
        return None
    matmul = rotary.inputs[0].producer()
    positions = rotary.inputs[1]
    if (
        matmul is None or matmul.op_type != "MatMul" or not _is_const(matmul.inputs[1])
        or positions is None or positions.shape is None or len(positions.shape) != 2
        or len(mha.inputs[0].uses()) != 1 or len(rotary.inputs[0].uses()) != 1
        or matmul.inputs[0].shape is None or len(matmul.inputs[0].shape) != 3
    ):
        return None
    return rotary, matmul


def _keeps_batch_and_seq(node: Any) -> int | None:
    """0 if the Reshape's constant shape copies the batch and sequence dims, the width if
    its output is a (batch, seq, width) tensor whose shape is computed at run time, None
    if it may move rows (then the rewrite is not safe)."""
    shape = node.inputs[1]
    if _is_const(shape):
        dims = shape.const_value.numpy().tolist()
        if len(dims) >= 2 and dims[:2] == [0, 0] and not node.attributes.get_int("allowzero", 0):
            return 0
        return None
    out, src = node.outputs[0].shape, node.inputs[0].shape
    if out is None or src is None or len(out) != 3 or len(src) < 2:
        return None
    if isinstance(out[2], int) and str(out[0]) == str(src[0]) and str(out[1]) == str(src[1]):
        return int(out[2])
    return None


def _pooling_gather(graph: Any) -> Any:
    """The ``Gather(axis=1, index=-1)`` of a rank-3 tensor that feeds the output, or None."""
    found = []
    for node in graph:
        if node.op_type != "Gather" or node.domain != "":
            continue
        index = node.inputs[1]
        if node.attributes.get_int("axis", 0) != 1 or not _is_const(index):
            continue
        data = node.inputs[0]
        if data.shape is None or len(data.shape) != 3:
            continue
        value = index.const_value.numpy()
        if value.shape == () and int(value) == -1:
            found.append(node)
    return found[0] if len(found) == 1 else None


def _is_const(value: Any) -> bool:
    return value is not None and value.const_value is not None


def _descendants(node: Any) -> set[Any]:
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        for out in current.outputs:
            for user, _ in out.uses():
                if user not in seen:
                    seen.add(user)
                    todo.append(user)
    return seen | {node}


def _ancestors(node: Any) -> set[Any]:
    seen, todo = set(), [node]
    while todo:
        current = todo.pop()
        for value in current.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and producer not in seen:
                seen.add(producer)
                todo.append(producer)
    return seen | {node}
