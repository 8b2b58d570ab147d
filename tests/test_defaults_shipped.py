"""Default models shipped inside the package: what is shipped, and the ship/lookup path."""

from __future__ import annotations

import json

import pytest

from pe_core.defaults import DEFAULT_NAMES, RECIPE_VERSION, ensure_default, recipe
from pe_core.defaults import build as build_mod
from pe_core.defaults import shipped as shipped_mod


@pytest.mark.parametrize("name", DEFAULT_NAMES)
def test_package_ships_every_default_of_this_recipe(name, tmp_path, monkeypatch):
    """The real shipped folders: current recipe, float16 tensors loading into float32."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("PE_CACHE", str(tmp_path))  # nothing built on this "machine"
    monkeypatch.delenv("PE_DEFAULTS_TINY", raising=False)
    monkeypatch.setattr(build_mod, "build_model", lambda *a: pytest.fail("built"))
    folder = ensure_default(name)
    assert folder == shipped_mod.shipped_root() / name
    meta = json.loads((folder / "pe_default.json").read_text())
    assert meta["recipe_version"] == RECIPE_VERSION and meta["shipped_dtype"] == "float16"
    assert meta["recipe"] == json.loads(json.dumps(recipe(name).to_json()))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.hidden_size == recipe(name).config["hidden_size"]
    # shipping in float16 must not have cost the model its language modelling
    assert meta["dev_perplexity"] < 1.02 * meta["built_dev_perplexity"]


def test_ship_then_lookup_and_a_stale_recipe_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("PE_CACHE", str(tmp_path / "cache"))
    tiny = recipe("qwen", tiny=True)
    built = tmp_path / "built"
    build_mod.build_model(tiny, built)
    monkeypatch.setattr(shipped_mod, "SHIPPED_ROOT", tmp_path / "shipped")
    monkeypatch.setattr(shipped_mod, "recipe", lambda name, tiny=False: tiny_recipe)
    tiny_recipe = tiny
    folder = shipped_mod.ship("qwen", built)
    assert folder == tmp_path / "shipped" / RECIPE_VERSION / "qwen"
    assert shipped_mod.shipped_folder("qwen") == folder
    meta = json.loads((folder / "pe_default.json").read_text())
    assert meta["size_bytes"] < (built / "model.safetensors").stat().st_size
    assert meta["dev_perplexity"] == pytest.approx(meta["built_dev_perplexity"], rel=0.02)
    # a recipe change makes the shipped folder stale: it is not used
    tiny_recipe = recipe("gemma", tiny=True)
    assert shipped_mod.shipped_folder("qwen") is None


def test_ship_needs_a_built_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped_mod, "SHIPPED_ROOT", tmp_path / "shipped")
    with pytest.raises(FileNotFoundError, match="no built default model"):
        shipped_mod.ship("llama", tmp_path)
    assert not list((tmp_path / "shipped").rglob("*.safetensors"))
