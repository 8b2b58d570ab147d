"""Damaged, edited or incomplete saved artifacts at every entry point that loads them
(``pe_core.load``, ``pe encode --alignment``, ``pe align --from``): a typed error that
names the file and says what to do (the CLI: exit 2, one line), never an embedder that
gives silently wrong vectors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import pe_core
from pe_core.errors import (
    ConfigError,
    CorruptFileError,
    DimensionMismatchError,
    MissingFileError,
    NonFiniteWeightsError,
    PEError,
    WeightsMismatchError,
)

pytestmark = pytest.mark.usefixtures("one_thread")
INSTR = "Retrieve a passage that answers the question"


@pytest.fixture(scope="module")
def run(tiny_folders, tmp_path_factory) -> Path:
    """What `pe train` leaves: alignment, pe_config.json, prompting/, train_settings.json."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                             prompting=str(tiny_folders["prompting"]), device="cpu",
                             allow_untrained=True)
    folder = tmp_path_factory.mktemp("run") / "run"
    model.save(folder, save_prompting=True)
    (folder / "train_settings.json").write_text(json.dumps({"method": "pe", "steps": 2}))
    return folder


@pytest.fixture
def bad(run, tmp_path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "bad"))


def edit_tensors(path: Path, change: Any) -> None:
    tensors = load_file(path)
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              {"format": "pt"} if "prompting" in str(path) else None)


def edit_alignment(change: Any) -> Any:
    def damage(folder: Path) -> None:
        path = folder / "alignment.safetensors"
        header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8],
                                                                      "little")])
        tensors = load_file(path)
        change(tensors)
        save_file(tensors, path, header.get("__metadata__"))
    return damage


def edit_config(change: Any) -> Any:
    def damage(folder: Path) -> None:
        path = folder / "pe_config.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return damage


def set_nan(t: dict) -> None:
    t["weight"][0, 0] = float("nan")


def set_inf(t: dict) -> None:
    t["weight"][1, 2] = float("inf")


def to_int32(t: dict) -> None:
    t["weight"] = (t["weight"] * 100).to(torch.int32)


def prompting_embed_nan(folder: Path) -> None:
    def change(t: dict) -> None:
        t["model.embed_tokens.weight"][5] = float("nan")
    edit_tensors(folder / "prompting" / "model.safetensors", change)


def prompting_wrong_shape(folder: Path) -> None:
    def change(t: dict) -> None:
        t["model.layers.0.mlp.up_proj.weight"] = t["model.layers.0.mlp.up_proj.weight"][:-1]
    edit_tensors(folder / "prompting" / "model.safetensors", change)


def bias_of_wrong_shape(t: dict) -> None:
    t["bias"] = torch.zeros(7)


def header_not_int(folder: Path) -> None:
    path = folder / "alignment.safetensors"
    save_file(load_file(path), path, {"format": "pe-alignment/1", "d_P": "abc", "d_B": "32"})


def prompting_embed_int32(folder: Path) -> None:
    def change(t: dict) -> None:
        t["model.embed_tokens.weight"] = (t["model.embed_tokens.weight"] * 100).to(torch.int32)
    edit_tensors(folder / "prompting" / "model.safetensors", change)


def settings_unreadable_and_prompting_gone(folder: Path) -> None:
    shutil.rmtree(folder / "prompting")
    (folder / "train_settings.json").write_text("{cut sh")


def alignment_made_a_folder(folder: Path) -> None:
    (folder / "alignment.safetensors").unlink()
    (folder / "alignment.safetensors").mkdir()


CASES = [
    ("alignment-nan", edit_alignment(set_nan), NonFiniteWeightsError, "NaN or inf"),
    ("alignment-inf", edit_alignment(set_inf), NonFiniteWeightsError, "NaN or inf"),
    ("alignment-int32", edit_alignment(to_int32), CorruptFileError, "not floating point"),
    ("prompting-embeddings-nan", prompting_embed_nan, NonFiniteWeightsError,
     "embed_tokens.*NaN"),
    ("prompting-wrong-shape", prompting_wrong_shape, WeightsMismatchError, "shape"),
    ("prompting-tokenizer-deleted", lambda f: (f / "prompting" / "tokenizer.json").unlink(),
     MissingFileError, "tokenizer"),
    ("prompting-folder-gone", lambda f: shutil.rmtree(f / "prompting"), MissingFileError,
     "without .*prompting"),
    ("config-d_B-wrong", edit_config(lambda d: d.update(d_B=d["d_B"] + 1)),
     DimensionMismatchError, "pe_config.json declares"),
    ("config-no-d_B", edit_config(lambda d: d.pop("d_B")), ConfigError, "'d_B'"),
    ("config-no-backbone", edit_config(lambda d: d.pop("backbone")), ConfigError, "'backbone'"),
    ("template-unknown-field", edit_config(lambda d: d.update(template="{instruction} {x}")),
     ConfigError, "template"),
    ("template-lone-brace", edit_config(lambda d: d.update(template="{instruction} {")),
     ConfigError, "template"),
    ("alignment-bias-shape", edit_alignment(bias_of_wrong_shape), DimensionMismatchError,
     "'bias' has shape"),
    ("alignment-header-not-int", header_not_int, CorruptFileError, "not integers"),
    ("prompting-embeddings-int32", prompting_embed_int32, WeightsMismatchError, "dtype"),
    ("prompting-config-not-json", lambda f: (f / "prompting" / "config.json").write_text("{x"),
     ConfigError, "config.json is not valid JSON"),
    ("prompting-config-no-model-type",
     lambda f: (f / "prompting" / "config.json").write_text('{"hidden_size": 24}'),
     ConfigError, "model_type"),
    ("prompting-tokenizer-garbage",
     lambda f: (f / "prompting" / "tokenizer.json").write_text('{"version": "1.0"}'),
     CorruptFileError, "tokenizer could not be read"),
    ("settings-unreadable-prompting-gone", settings_unreadable_and_prompting_gone,
     MissingFileError, "cannot be read"),
    ("alignment-is-a-folder", alignment_made_a_folder, MissingFileError, "is not a file"),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("damage", "error", "match"), [c[1:] for c in CASES], ids=IDS)
def test_load_refuses(tiny_folders, bad, damage, error, match):
    damage(bad)
    with pytest.raises(error, match=match):
        pe_core.load(backbone="llama", model=str(tiny_folders["model"]), alignment=str(bad),
                     device="cpu")


@pytest.mark.parametrize(("damage", "error", "match"), [c[1:] for c in CASES], ids=IDS)
def test_pe_encode_alignment_exits_2_with_one_line(tiny_folders, bad, tmp_path, capsys,
                                                     damage, error, match):
    from pe_core.cli.main import main

    damage(bad)
    (tmp_path / "in.txt").write_text("a\n")
    out = tmp_path / "o.npy"
    assert main(["encode", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                 "--alignment", str(bad), "--device", "cpu", str(tmp_path / "in.txt"),
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pe: error: ")
    assert not out.exists()


ALIGN_CASES = ["alignment-nan", "alignment-int32", "prompting-embeddings-nan",
               "prompting-folder-gone", "config-no-d_B", "template-lone-brace"]


@pytest.mark.parametrize("case", ALIGN_CASES)
def test_pe_align_from_a_damaged_run_is_refused(tiny_folders, bad, tmp_path, case):
    """``pe align --from`` reads the same files through the same checks (a NaN source
    alignment is named as such, not taken for a learning rate too high)."""
    from training_helpers import pair_records, write_jsonl

    _, damage, error, match = CASES[IDS.index(case)]
    damage(bad)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_records(16))
    with pytest.raises(error, match=match) as info:
        pe_core.align(bad, str(pairs), backbone="llama", model=str(tiny_folders["model"]),
                      out=tmp_path / "moved", steps=1, batch_size=8, progress=False)
    assert isinstance(info.value, PEError)
    assert not (tmp_path / "moved").exists()


def test_alignment_given_as_its_file_names_the_folder(tiny_folders, run):
    with pytest.raises(MissingFileError, match="is a file: pass the folder"):
        pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                     alignment=str(run / "alignment.safetensors"), device="cpu")


def test_the_undamaged_run_loads_everywhere(tiny_folders, run, tmp_path):
    """The fixture itself passes every check (so each refusal above is the damage's)."""
    model = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                         alignment=str(run), device="cpu")
    assert model.encode(["a"], instruction=INSTR).shape == (1, model.dim)
