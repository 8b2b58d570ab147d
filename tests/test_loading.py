"""pe_core.load on local folders, and the typed errors for what a user can get wrong."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import pe_core
from pe_core.errors import (
    CorruptFileError,
    DimensionMismatchError,
    MissingFileError,
    ModelTypeMismatchError,
    OfflineError,
    PEError,
)

INSTR = "Retrieve a passage that answers the question"


def load(folders, **kw):
    # the tiny folders are local folders, which pe treats as real models: their untrained
    # embedder must be asked for
    return pe_core.load(
        backbone=kw.pop("backbone", "llama"), model=str(kw.pop("model", folders["model"])),
        prompting=str(kw.pop("prompting", folders["prompting"])), device="cpu",
        allow_untrained=kw.pop("allow_untrained", True), **kw,
    )


def test_load_local_folders_untrained_warns(tiny_folders):
    with pytest.warns(UserWarning, match="no trained alignment"):
        model = load(tiny_folders)
    out = model.encode(["hello"], instruction=INSTR)
    assert out.shape == (1, model.dim)
    assert model.config.model_id == str(tiny_folders["model"])


def test_load_with_saved_alignment_roundtrip(tiny_folders, tmp_path):
    with pytest.warns(UserWarning):
        model = load(tiny_folders, placement="prefix", num_soft_tokens=3)
    model.save(tmp_path / "align")
    again = load(tiny_folders, alignment=str(tmp_path / "align"))
    assert again.config.placement == "prefix" and again.config.K == 3
    for name, tensor in model.alignment.state_dict().items():
        assert torch.equal(tensor, again.alignment.state_dict()[name])  # saved exactly
    # two instances of the same weights may sum in another order on some CPUs
    np.testing.assert_allclose(
        model.encode(["a b", "c"], instruction=INSTR),
        again.encode(["a b", "c"], instruction=INSTR), atol=1e-6, rtol=0,
    )


def test_model_type_mismatch_names_right_backbone(tmp_path):
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    folders = save_tiny_folders(get_backbone("gemma"), tmp_path)
    with pytest.raises(ModelTypeMismatchError, match="backbone='gemma'"):
        load(folders, backbone="llama")


def test_alignment_dimension_mismatch(tiny_folders, tmp_path):
    from pe_core.model.alignment import Alignment
    from pe_core.model.config import EmbedderConfig

    folder = tmp_path / "wrong"
    folder.mkdir()
    Alignment(24, 99).save(folder / "alignment.safetensors")
    EmbedderConfig(backbone="llama", d_P=24, d_B=99).save(folder)
    with pytest.raises(DimensionMismatchError, match="d_B=99"):
        load(tiny_folders, alignment=str(folder))
    Alignment(7, 32).save(folder / "alignment.safetensors")
    with pytest.raises(DimensionMismatchError, match="d_P=7"):
        load(tiny_folders, alignment=str(folder))


def test_truncated_and_corrupt_safetensors(tiny_folders, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_folders["model"], bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        load(tiny_folders, model=bad)
    weights.write_bytes(b"\xff" * 64)
    with pytest.raises(CorruptFileError):
        load(tiny_folders, model=bad)


def test_corrupt_alignment_file(tiny_folders, tmp_path):
    with pytest.warns(UserWarning):
        model = load(tiny_folders)
    model.save(tmp_path / "align")
    path = tmp_path / "align" / "alignment.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CorruptFileError):
        load(tiny_folders, alignment=str(tmp_path / "align"))


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "tokenizer.json"])
def test_missing_file_in_model_folder(tiny_folders, tmp_path, missing):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_folders["model"], bad)
    (bad / missing).unlink()
    # tokenizer_config.json is still there, but no vocabulary to make a tokenizer from
    with pytest.raises(MissingFileError, match={"tokenizer.json": "vocabulary"}.get(missing)):
        load(tiny_folders, model=bad)


def test_missing_alignment_folder_and_nonexistent_path(tiny_folders, tmp_path):
    with pytest.raises(MissingFileError):
        load(tiny_folders, model=tmp_path / "nope" / "deeper" / "x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingFileError, match="alignment.safetensors"):
        load(tiny_folders, alignment=str(empty))


def test_hub_id_offline_fails_fast_with_typed_error(tiny_folders, monkeypatch):
    import time

    start = time.monotonic()
    with pytest.raises((OfflineError, MissingFileError)) as err:
        load(tiny_folders, model="meta-llama/Llama-3.2-1B@main")
    assert isinstance(err.value, PEError)
    assert time.monotonic() - start < 5


def test_pe_help_does_not_import_torch():
    code = (
        "import sys; from pe_core.cli.main import build_parser; build_parser(); "
        "print(any(m == 'torch' or m.startswith('torch.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pe_encode_cli_text_and_jsonl(tiny_folders, tmp_path):
    import json

    from pe_core.cli.main import main

    (tmp_path / "in.txt").write_text("first line\nsecond line\n")
    args = ["encode", "--backbone", "llama", "--model", str(tiny_folders["model"]),
            "--prompting", str(tiny_folders["prompting"]), "--device", "cpu",
            "--allow-untrained"]
    with pytest.warns(UserWarning):
        assert main(args + [str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy")]) == 0
    assert np.load(tmp_path / "o.npy").shape == (2, 32)
    (tmp_path / "in.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n')
    with pytest.warns(UserWarning):
        assert main(args + [str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o.jsonl"),
                            "--instruction", INSTR]) == 0
    rows = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a", "b", "c"] and len(rows[0]["embedding"]) == 32
    (tmp_path / "bad.jsonl").write_text('{"body": "a"}\n')
    assert main(args + [str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "x.npy")]) == 2
    assert not (tmp_path / "x.npy").exists()


def test_default_model_ids_carry_the_recipe_version(monkeypatch):
    """An alignment trained on another recipe's default (other widths) is never found for
    this one, and naming an old recipe's model says what to do."""
    from pe_core.defaults import RECIPE_VERSION
    from pe_core.errors import MissingFileError
    from pe_core.model_refs import ref_id, resolve_model

    assert ref_id("pe-default:llama") == f"pe-default:llama@{RECIPE_VERSION}"
    assert ref_id(f"pe-default:llama@{RECIPE_VERSION}") == f"pe-default:llama@{RECIPE_VERSION}"
    assert ref_id("pe-default:llama") != "pe-default:llama@v0"
    monkeypatch.setattr("pe_core.defaults.ensure_default", lambda name: pytest.fail("built"))
    with pytest.raises(MissingFileError, match=f"recipe v0.*{RECIPE_VERSION}.*pe-default:qwen"):
        resolve_model("pe-default:qwen@v0")


def test_untrained_real_model_is_refused_unless_asked_for(tiny_folders, tmp_path, capsys):
    """A model that is not a toy ``pe-default:`` one, with no trained alignment, would rank
    below its own frozen backbone: load refuses it and names the ways out; the CLI says so
    in one line; ``allow_untrained=True`` / ``--allow-untrained`` gets it."""
    from pe_core.cli.main import main
    from pe_core.errors import UntrainedModelError

    with pytest.raises(UntrainedModelError, match="pe train.*pe align.*allow_untrained=True"):
        load(tiny_folders, allow_untrained=False)
    (tmp_path / "in.txt").write_text("a\n")
    args = ["encode", "--backbone", "llama", "--model", str(tiny_folders["model"]),
            "--prompting", str(tiny_folders["prompting"]), "--device", "cpu",
            str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--allow-untrained" in err
    assert not (tmp_path / "o.npy").exists()
    with pytest.warns(UserWarning, match="no trained alignment"):
        assert main(args + ["--allow-untrained"]) == 0


def test_toy_default_models_load_untrained_without_the_flag(monkeypatch):
    """``pe-default:`` models are untrained toys: no flag needed (tests and the demo
    build on them)."""
    from pe_core.loading import check_trained_or_toy

    check_trained_or_toy("llama", "pe-default:llama", None)  # passes
    check_trained_or_toy("llama", "pe-default:llama@v3", "x/y")


def test_found_alignment_needs_no_flag(tiny_folders, tmp_path):
    """A trained alignment found through a resolver is what the rule asks for."""
    with pytest.warns(UserWarning):
        model = load(tiny_folders)
    model.save(tmp_path / "align")
    again = load(tiny_folders, alignment=str(tmp_path / "align"), allow_untrained=False)
    assert again.dim == model.dim
