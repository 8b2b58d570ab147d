"""Never worse than the frozen backbone (issue 37 point 5) on a real checkpoint: with no
trained alignment for the (Prompting LLM, backbone) pair, ``pe_core.load`` and
``pe encode`` refuse with :class:`UntrainedModelError` naming the ways to a trained one;
the untrained embedder (it ranks at random) comes only when asked for."""

from __future__ import annotations

import pytest

MODEL = "pe-real:smollm2-135m"


@pytest.fixture
def untried_pair(tmp_path, monkeypatch):
    """A Prompting LLM nothing was ever trained with (a tiny local one), and an empty
    registry: no resolver can find an alignment for the pair."""
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    monkeypatch.setenv("PE_REGISTRY", str(tmp_path / "registry"))
    return str(save_tiny_folders(get_backbone("llama"), tmp_path / "tiny")["prompting"])


def test_real_backbone_without_a_trained_alignment_is_refused(untried_pair, tmp_path, capsys):
    import pe_core
    from pe_core.cli.main import main
    from pe_core.errors import UntrainedModelError

    with pytest.raises(UntrainedModelError) as info:
        pe_core.load(backbone="llama", model=MODEL, prompting=untried_pair, device="cpu")
    text = str(info.value)
    assert "pe train" in text and "pe align" in text and "allow_untrained=True" in text
    (tmp_path / "in.txt").write_text("a\n")
    argv = ["encode", "--backbone", "llama", "--model", MODEL, "--prompting", untried_pair,
            "--device", "cpu", str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.npy")]
    capsys.readouterr()  # what the first load printed (dequantizing the GGUF once)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-untrained" in err[0]
    assert not (tmp_path / "o.npy").exists()


def test_the_untrained_embedder_comes_when_asked_for(untried_pair):
    import pe_core

    with pytest.warns(UserWarning, match="no trained alignment"):
        model = pe_core.load(backbone="llama", model=MODEL, prompting=untried_pair,
                             device="cpu", allow_untrained=True)
    assert model.encode(["a b"], instruction="Retrieve a passage").shape == (1, model.dim)
