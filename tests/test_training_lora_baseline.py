"""Training, the LoRA baseline and the dev score (pe_core.training.lora_baseline, dev_eval).
Tiny models, tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pe_core
from pe_core.training.data import Example, read_pairs

pytestmark = pytest.mark.usefixtures("one_thread")

# -- LoRA baseline ----------------------------------------------------------------------
def test_lora_baseline_recipe_output_and_same_eval(pairs, tiny_folders, tmp_path):
    from pe_core.training.dev_eval import retrieval_scores
    from pe_core.training.lora_baseline import LoraEmbedder

    result = pe_core.train(str(pairs), backbone="llama", model=str(tiny_folders["model"]),
                           out=tmp_path / "lora", method="lora", steps=2, batch_size=8,
                           progress=False, dev_size=8)
    out = tmp_path / "lora"
    assert (out / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 16
    targets = {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= targets
    meta = json.loads((out / "pe_lora_config.json").read_text())
    assert meta["pooling"] == "last" and meta["training_data_hash"]
    model = result.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.format_query("q", "Do it") == "Instruct: Do it\nQuery: q"
    again = LoraEmbedder.load(out, device="cpu")
    texts = ["alpha beta", "fox dog"]
    np.testing.assert_allclose(again.encode(texts, instruction="x"),
                               model.encode(texts, instruction="x"), atol=1e-5)
    dev = read_pairs(pairs).split_dev(8)[1].examples
    assert result.dev == pytest.approx(retrieval_scores(model, dev))


def test_dev_eval_perfect_and_chance():
    from pe_core.training.dev_eval import retrieval_scores

    class Oracle:
        def encode(self, texts, instruction=None, **kw):
            # a query and its positive share the first word; everything else differs
            return np.stack([np.eye(64)[hash(t.split()[0]) % 64] for t in texts])

    examples = [Example(f"w{i} q", f"w{i} doc", (), "x", "x") for i in range(5)]
    scores = retrieval_scores(Oracle(), examples)
    assert scores["recall@1"] == 1.0 and scores["ndcg@10"] == 1.0
