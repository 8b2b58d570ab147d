"""``--optimize``: fuse the exported graph into onnxruntime's transformer kernels.

The exporter already depends on onnxscript, whose ``ort_fusions`` rewrite dynamo graphs
into onnxruntime contrib ops. We apply the subset that keeps pe's semantics:

* RMSNorm -> ``SimplifiedLayerNormalization``, residual + RMSNorm ->
  ``SkipSimplifiedLayerNormalization``, rotary embedding -> ``RotaryEmbedding``,
* scaled-dot-product attention -> ``MultiHeadAttention`` (the padding mask stays an
  additive attention bias, so any padding side and the suffix layout
  ``[text ; pad ; soft]`` stay exact).

Left out on purpose: the ``GroupQueryAttention`` fusion (``optimize_for_ort`` applies it
first). GQA describes padding by per-row sequence lengths only, so it cannot represent a
mask with holes and was measured 0.18 off on padded batches. The exporter checks parity
after fusing anyway and falls back to the unfused graph when it fails.

Measured (``benchmarks/inference.py``: hidden 256, 4 layers, 128 tokens, one thread, CPU
time): fp32 1.15x (batch 1) to 1.3x (batch 32), int8 1.15x to 1.35x over the unfused
graphs. What stays slow is attention itself: onnxruntime's CPU ``MultiHeadAttention``
with an additive mask takes 29 ms per layer at batch 32 x 133 tokens, 11 ms unmasked.

What ``optimum``'s ``ORTOptimizer`` (the ``onnxruntime.transformers`` optimizer, levels
1, 2 and 99) does to the same graph: it fuses only RMSNorm, which the onnxruntime session
does by itself, and its symbolic shape inference fails on dynamo graphs: 75 / 70 texts/s
against 75 / 65 unfused at batch 1 / 32, i.e. no gain beyond noise.

The fused graph uses ``com.microsoft`` ops: onnxruntime (CPU/CUDA) runs it, other ONNX
runtimes may not.

Example::

    counts = fuse_for_onnxruntime(Path("raw/model.onnx"), Path("out/model.onnx"))
    counts["MultiHeadAttention"]      # one per layer when the pattern matched
"""

from __future__ import annotations

from pathlib import Path


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
    common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    common.RemoveInitializersFromInputsPass()(model)
    ir.save(model, dst, external_data=dst.name + ".data")
    return counts
