"""Training, what trains and what stays frozen in a PromptEmbedder run
(pe_core.training.methods). Tiny models, tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import (
    INSTRUCTIONS,
    train_tiny,
)

import pe_core

pytestmark = pytest.mark.usefixtures("one_thread")

# -- what trains ----------------------------------------------------------------------
def test_backbone_frozen_no_grad_no_optimizer_state(pairs, tiny_folders, tmp_path):
    from safetensors.torch import load_file

    result = train_tiny(pairs, tiny_folders, tmp_path / "run", steps=2)
    model = result.model
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    names = set(load_file(ckpt / "trainable.safetensors"))
    opt_names = {k.split("::")[0] for k in load_file(ckpt / "optimizer.safetensors")}
    assert "alignment.weight" in names and any(n.startswith("prompting.") for n in names)
    assert opt_names == names  # only trainable parameters carry optimizer state
    assert not any("backbone" in n for n in names)
    original = load_file(Path(tiny_folders["model"]) / "model.safetensors")
    for name, p in model.backbone.model.named_parameters():
        torch.testing.assert_close(p.detach(), original[name], rtol=0, atol=0)
    # every checkpoint file is safetensors or JSON: nothing is pickled
    assert {f.suffix for f in ckpt.iterdir()} == {".safetensors", ".json"}


def test_prompting_lora_trains_adapter_and_saves_plain_folder(pairs, tiny_folders, tmp_path):
    result = train_tiny(pairs, tiny_folders, tmp_path / "run", steps=2, prompting_lora=4)
    out = tmp_path / "run"
    assert (out / "prompting" / "config.json").is_file()
    assert not (out / "prompting" / "adapter_config.json").exists()
    again = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                         alignment=str(out), device="cpu")
    a = result.model.encode(["alpha beta"], instruction=INSTRUCTIONS[0])
    np.testing.assert_allclose(again.encode(["alpha beta"], instruction=INSTRUCTIONS[0]), a,
                               atol=1e-5)


def test_gumbel_annealing_and_straight_through(pairs, tiny_folders, tmp_path):
    train_tiny(pairs, tiny_folders, tmp_path / "run", steps=3, gumbel_tau_start=2.0,
           gumbel_tau_end=0.5, straight_through=True)
    taus = [r["tau"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").open())
            if "tau" in r]
    assert taus[0] == pytest.approx(2.0) and taus[0] > taus[1] > taus[2] >= 0.5


@pytest.mark.parametrize("noise", [None, True, False])
def test_gumbel_noise_reaches_the_prompting_llm_only_when_asked(pairs, tiny_folders, tmp_path,
                                                                monkeypatch, noise):
    """Off by default: training draws the noise-free soft prompt that inference uses."""
    from pe_core.model.prompting import PromptingLLM

    seen: list = []
    plain = PromptingLLM.distributions

    def spy(self, instructions, num_tokens, tau=1.0, hard=False, noise_seed=None):
        seen.append(noise_seed)
        return plain(self, instructions, num_tokens, tau, hard, noise_seed)

    monkeypatch.setattr(PromptingLLM, "distributions", spy)
    kw = {} if noise is None else {"gumbel_noise": noise}
    train_tiny(pairs, tiny_folders, tmp_path / "run", steps=2, eval_every=0, **kw)
    training = [s for s in seen if s is not None]
    if noise:
        assert len(set(training)) == 2  # one seed per step, a function of (seed, step)
    else:
        assert seen and not training
    recorded = json.loads((tmp_path / "run" / "train_settings.json").read_text())
    assert recorded["gumbel_noise"] is bool(noise)
