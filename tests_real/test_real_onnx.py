"""ONNX parity on real weights: Gemma 3 270M (sliding window, 18 layers) exported through
pe-registry, onnxruntime against torch on a padded batch whose long row is past the
512-token window. export_onnx itself checks a fresh random padded batch (1e-4) and keeps
the fused graph only if it passes; this adds the real-text check through ``encode``."""

from __future__ import annotations

import numpy as np

from pe_core.testing.conformance import TEXTS

TOL = 1e-4  # normalised embeddings, fp32, 18 layers: onnxruntime's kernels sum otherwise


def test_gemma3_onnx_matches_torch(tmp_path):
    import warnings

    from pe_registry import OnnxEmbedder
    from pe_registry.onnx_export import export_onnx

    import pe_core

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the shipped (zoo) model is found; max_length: its training run's 64 would cut
        # the long row short of the window
        model = pe_core.load(backbone="gemma", model="pe-real:gemma3-270m", device="cpu",
                             allow_untrained=True, max_length=512)
    instruction = "Retrieve a passage that answers the question"
    folder = export_onnx(model, instruction, tmp_path / "onnx")
    texts = [*TEXTS, " ".join(TEXTS * 60)]  # the last: past the sliding window
    assert len(model.tokenizer(texts[-1])["input_ids"]) > 600
    got = OnnxEmbedder(folder).encode(texts, batch_size=len(texts))
    want = model.encode(texts, instruction=instruction, batch_size=len(texts))
    assert np.abs(got - want).max() <= TOL
