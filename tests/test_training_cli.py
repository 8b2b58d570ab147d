"""Training, pe train / pe align / pe plot from the command line (pe_core.cli.train_cmd,
training.plot). Tiny models, tiny data."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def qwen_folders(tmp_path_factory):
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    return save_tiny_folders(get_backbone("qwen"), tmp_path_factory.mktemp("qwen"))


# -- CLI and plot -----------------------------------------------------------------------
def test_cli_train_align_plot(pairs, tiny_folders, qwen_folders, tmp_path, capsys):
    from pe_core.cli.main import main

    run = tmp_path / "cli"
    common = ["--data", str(pairs), "--steps", "2", "--batch-size", "8", "--no-progress"]
    assert main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                 "--prompting", str(tiny_folders["prompting"]), "--out", str(run),
                 "--placement", "prefix", "--num-soft-tokens", "3", *common]) == 0
    cfg = json.loads((run / "pe_config.json").read_text())
    assert cfg["placement"] == "prefix" and cfg["num_soft_tokens"] == 3
    assert main(["align", "--from", str(run), "--backbone", "qwen", "--model",
                 str(qwen_folders["model"]), "--out", str(tmp_path / "q"), *common]) == 0
    assert main(["align", "--from", str(run), "--backbone", "qwen", "--model",
                 str(qwen_folders["model"]), "--out", str(tmp_path / "q2"), "--init", "tokens",
                 *common]) == 0
    assert main(["plot", str(run)]) == 0
    png = run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a typed error becomes exit status 2 with a message, not a traceback
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                 "--out", str(tmp_path / "x"), "--data", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err


def test_plot_without_log_is_typed_error(tmp_path):
    from pe_core.errors import MissingFileError
    from pe_core.training.plot import plot_run

    with pytest.raises(MissingFileError):
        plot_run(tmp_path)
