"""Training, pe align: transfer to a new backbone (pe_core.training.align_init, api.align).
Tiny models, tiny data."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import (
    INSTRUCTIONS,
    train_tiny,
)

import pe_core
from pe_core.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def qwen_folders(tmp_path_factory):
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    return save_tiny_folders(get_backbone("qwen"), tmp_path_factory.mktemp("qwen"))


# -- transfer -------------------------------------------------------------------------
def test_align_trains_only_new_alignment_from_least_squares(pairs, tiny_folders, qwen_folders,
                                                            tmp_path):
    from pe_core.model.alignment import Alignment
    from pe_core.training import methods

    train_tiny(pairs, tiny_folders, tmp_path / "src", steps=2)
    calls = []
    real = methods.CachedSoftTokenHead.cache

    def counting(self, instructions):
        before = set(self.soft_tokens)
        real(self, instructions)
        calls.extend(set(self.soft_tokens) - before)

    initial = {}

    def on_step(step, loss):
        initial.setdefault("steps", []).append(step)

    methods.CachedSoftTokenHead.cache = counting
    try:
        result = pe_core.align(
            tmp_path / "src", str(pairs), backbone="qwen", model=str(qwen_folders["model"]),
            out=tmp_path / "qwen", steps=4, batch_size=8, alignment_lr=1e-2, progress=False,
            dev_size=8, eval_every=2, on_step=on_step, init="tokens",
        )
    finally:
        methods.CachedSoftTokenHead.cache = real
    model = result.model
    # each instruction's soft tokens were computed once (two tasks + the document side)
    assert sorted(calls) == sorted({*INSTRUCTIONS, model.config.document_instruction})
    assert all(not p.requires_grad for p in model.prompting.parameters())
    src = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                       alignment=str(tmp_path / "src"), device="cpu")
    for a, b in zip(src.prompting.parameters(), model.prompting.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    out = tmp_path / "qwen"
    cfg = json.loads((out / "pe_config.json").read_text())
    assert cfg["prompting_id"] == str((tmp_path / "src" / "prompting").resolve())
    assert cfg["backbone"] == "qwen" and cfg["training_data_hash"]
    assert not (out / "prompting").exists()
    # the log has the dev score against steps
    scores = [r for r in map(json.loads, (out / "log.jsonl").open()) if "dev_score" in r]
    assert [r["step"] for r in scores] == [0, 2, 4]  # from the least-squares start
    # the alignment started from the token least-squares fit (init="source": test_align_init)
    ls = Alignment.least_squares(model.prompting.embedding_table, model.backbone.embedding_table,
                                 model.prompting.tokenizer, model.tokenizer)
    from safetensors.torch import load_file

    trained = load_file(out / "alignment.safetensors")["weight"]
    assert not torch.equal(trained, ls.weight.detach())
    assert (trained - ls.weight.detach()).norm() < ls.weight.norm()
    # loadable as an ordinary alignment
    loaded = pe_core.load(backbone="qwen", model=str(qwen_folders["model"]), alignment=str(out),
                          device="cpu")
    np.testing.assert_allclose(loaded.encode(["fox"], instruction=INSTRUCTIONS[0]),
                               model.encode(["fox"], instruction=INSTRUCTIONS[0]), atol=1e-5)


def test_soft_norm_tokens_pins_every_soft_token_through_train_load_and_align(
        pairs, tiny_folders, qwen_folders, tmp_path):
    from pe_core.model.alignment import median_token_norm

    def norms(model, instruction=INSTRUCTIONS[0]):
        return model.soft_prompts([instruction])[0].detach().float().norm(dim=-1)

    result = train_tiny(pairs, tiny_folders, tmp_path / "src", steps=3, alignment_lr=1e-1,
                    soft_norm="tokens")
    model = result.model
    target = median_token_norm(model.backbone.embedding_table)
    assert model.config.soft_norm == "tokens"
    torch.testing.assert_close(norms(model), torch.full((5,), target), rtol=1e-5, atol=0)
    # the default leaves the norm to training: a large alignment lr moves it
    free = train_tiny(pairs, tiny_folders, tmp_path / "free", steps=3, alignment_lr=1e-1).model
    assert free.alignment.norm is None
    assert (norms(free) - target).abs().max() > 1e-3 * target
    # saved in pe_config.json and applied again at load (the norm itself is not saved)
    loaded = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                          alignment=str(tmp_path / "src"), device="cpu")
    torch.testing.assert_close(norms(loaded), norms(model), rtol=1e-5, atol=0)
    np.testing.assert_allclose(loaded.encode(["fox"], instruction=INSTRUCTIONS[0]),
                               model.encode(["fox"], instruction=INSTRUCTIONS[0]), atol=1e-5)
    # pe align inherits it and pins the carried alignment to the new backbone's median norm
    moved = pe_core.align(tmp_path / "src", str(pairs), backbone="qwen",
                          model=str(qwen_folders["model"]), out=tmp_path / "qwen", steps=2,
                          batch_size=8, progress=False).model
    assert moved.config.soft_norm == "tokens"
    qwen_target = median_token_norm(moved.backbone.embedding_table)
    assert moved.alignment.norm == pytest.approx(qwen_target)  # set on the carried alignment
    torch.testing.assert_close(norms(moved), torch.full((5,), qwen_target), rtol=1e-5, atol=0)
    with pytest.raises(ConfigError, match="soft_norm must be one of"):
        train_tiny(pairs, tiny_folders, tmp_path / "bad", steps=1, soft_norm="unit")
    assert not (tmp_path / "bad").exists()


def test_align_least_squares_initial_weights(llama_spec, tiny_folders):
    from pe_core.loading import assemble
    from pe_core.model.alignment import Alignment
    from pe_core.training.methods import AlignMethod
    from pe_core.training.settings import TrainSettings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = assemble(llama_spec, Path(tiny_folders["model"]), Path(tiny_folders["prompting"]),
                       device="cpu")
    method = AlignMethod(emb, TrainSettings(method="align"))
    ls = Alignment.least_squares(emb.prompting.embedding_table, emb.backbone.embedding_table,
                                 emb.prompting.tokenizer, emb.tokenizer)
    torch.testing.assert_close(method.named_trainable()["alignment.weight"], ls.weight)
    assert list(method.named_trainable()) == ["alignment.weight"]
