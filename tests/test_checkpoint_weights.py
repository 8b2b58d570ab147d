"""Every load verifies that the checkpoint's weights are the model's: a causal-LM checkpoint
of any family loads as a backbone with its trained weights, and a missing or unexpected
tensor is a typed error, never a warning and random weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import pe_core
from pe_core.errors import WeightsMismatchError
from pe_core.loading import load_backbone
from pe_core.plugins import get_plugin_manager
from pe_core.testing.tiny import save_tiny_folders, tiny_config, tiny_tokenizer

FAMILIES = [(spec.name, model_type) for spec in get_plugin_manager().backbones()
            if spec.name in ("llama", "mistral", "qwen", "gemma")
            for model_type in spec.model_types]


def _save_causal_lm(spec, model_type: str, folder: Path) -> dict[str, torch.Tensor]:
    """A tiny random ``*ForCausalLM`` saved as the Hub saves it; its tensors as saved."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(tiny_config(spec, model_type, tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_file(folder / "model.safetensors")


@pytest.mark.parametrize(("backbone", "model_type"), FAMILIES)
def test_causal_lm_checkpoint_loads_as_backbone_with_its_weights(backbone, model_type, tmp_path):
    spec = get_plugin_manager().backbones().get(backbone)
    saved = _save_causal_lm(spec, model_type, tmp_path / "causal")
    assert all(k.startswith(("model.", "lm_head.")) for k in saved)
    model = load_backbone(spec, tmp_path / "causal")
    params = dict(model.named_parameters())
    body = {k.removeprefix("model."): v for k, v in saved.items() if k.startswith("model.")}
    assert body.keys() == params.keys()
    for name, tensor in body.items():
        assert torch.equal(params[name].detach(), tensor), name


@pytest.mark.parametrize(("backbone", "model_type"), FAMILIES)
def test_a_removed_tensor_raises(backbone, model_type, tmp_path):
    spec = get_plugin_manager().backbones().get(backbone)
    saved = _save_causal_lm(spec, model_type, tmp_path / "causal")
    gone = next(k for k in sorted(saved) if "layers.1." in k)
    save_file({k: v for k, v in saved.items() if k != gone}, tmp_path / "causal" /
              "model.safetensors", {"format": "pt"})
    with pytest.raises(WeightsMismatchError, match=gone.removeprefix("model.")) as err:
        load_backbone(spec, tmp_path / "causal")
    assert str(tmp_path / "causal") in str(err.value)


def test_base_model_checkpoint_with_unexpected_tensor_raises(tmp_path):
    spec = get_plugin_manager().backbones().get("llama")
    folders = save_tiny_folders(spec, tmp_path)
    weights = folders["model"] / "model.safetensors"
    tensors = load_file(weights)
    tensors["layers.0.extra.weight"] = torch.zeros(2)
    save_file(tensors, weights, {"format": "pt"})
    with pytest.raises(WeightsMismatchError, match="unexpected weights: layers.0.extra.weight"):
        load_backbone(spec, folders["model"])


def test_prompting_llm_missing_its_head_raises(tmp_path):
    """A Prompting LLM generates: a checkpoint without its (untied) head is an error."""
    spec = get_plugin_manager().backbones().get("llama")
    folders = save_tiny_folders(spec, tmp_path)
    weights = folders["prompting"] / "model.safetensors"
    tensors = load_file(weights)
    assert "lm_head.weight" in tensors
    del tensors["lm_head.weight"]
    save_file(tensors, weights, {"format": "pt"})
    with warnings.catch_warnings(), pytest.raises(WeightsMismatchError, match="lm_head.weight"):
        warnings.simplefilter("ignore")
        pe_core.load(backbone="llama", model=str(folders["model"]),
                     prompting=str(folders["prompting"]), device="cpu", allow_untrained=True)
