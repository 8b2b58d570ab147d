"""Matryoshka training (issue 35, point 3): the InfoNCE at each prefix width, the
``matryoshka_dims`` setting and ``--matryoshka-dims`` flag, a width above d_B refused."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from training_helpers import pair_records, write_jsonl

import pe_core
from pe_core.cli.main import main
from pe_core.errors import ArgumentTypeError, ConfigError
from pe_core.training.loss import contrastive_loss, info_nce, matryoshka_info_nce
from pe_core.training.settings import TrainSettings

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(seed=0, n=6, d=16):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    docs = F.normalize(torch.randn(2 * n, d, generator=g), dim=-1)
    return q, docs, torch.arange(n)


def _at(x, width):
    return F.normalize(x[:, :width], dim=-1)


def test_loss_is_the_mean_of_infonce_at_each_renormalised_prefix():
    q, docs, labels = _batch()
    got = matryoshka_info_nce(q, docs, labels, 0.05, dims=(4, 8))
    per_width = [info_nce(_at(q, w), _at(docs, w), labels, 0.05) for w in (4, 8, 16)]
    torch.testing.assert_close(got, torch.stack(per_width).mean())
    # each width is its own term: the prefixes rank differently from the full vectors
    assert len({round(float(x), 4) for x in per_width}) == 3
    # the full width is always in, listed or not, and a width listed twice counts once
    torch.testing.assert_close(matryoshka_info_nce(q, docs, labels, 0.05, dims=(8, 16, 8)),
                               torch.stack(per_width[1:]).mean())
    torch.testing.assert_close(matryoshka_info_nce(q, docs, labels, 0.05),
                               info_nce(q, docs, labels, 0.05))


def test_contrastive_loss_passes_the_widths_and_hard_negatives_through():
    q, docs, _ = _batch()
    pos, neg = docs[:6], docs[6:]
    got = contrastive_loss(q, pos, neg, 0.05, dims=(4,))
    want = torch.stack([info_nce(_at(q, 4), _at(docs, 4), torch.arange(6), 0.05),
                        info_nce(q, docs, torch.arange(6), 0.05)]).mean()
    torch.testing.assert_close(got, want)


def test_gradient_reaches_the_prefix_through_every_width():
    q, docs, labels = _batch()
    q = q.clone().requires_grad_(True)
    matryoshka_info_nce(q, docs, labels, 0.05, dims=(4,)).backward()
    with_dims = q.grad.clone()
    q.grad = None
    info_nce(F.normalize(q, dim=-1), docs, labels, 0.05).backward()
    # the width-4 term adds gradient on the first 4 coordinates only, and the mean halves
    # the full-width term, so the tail is exactly half the plain gradient
    torch.testing.assert_close(with_dims[:, 4:], q.grad[:, 4:] / 2)
    assert not torch.allclose(with_dims[:, :4], q.grad[:, :4] / 2)


def test_a_width_above_the_embedding_is_a_config_error():
    q, docs, labels = _batch(d=16)
    with pytest.raises(ConfigError, match=r"matryoshka_dims \[32\] exceed the embedding "
                                          r"width 16"):
        matryoshka_info_nce(q, docs, labels, 0.05, dims=(8, 32))


@pytest.mark.parametrize("value, error, message", [
    ([0, 8], ConfigError, "each >= 1, got \\[0, 8\\]"),
    ("64,128", ArgumentTypeError, "a list of integers"),
    ([64.0], ArgumentTypeError, "a list of integers"),
    ([True], ArgumentTypeError, "a list of integers"),
])
def test_bad_settings_values(value, error, message):
    with pytest.raises(error, match=message):
        TrainSettings(matryoshka_dims=value)


def test_settings_take_a_list_and_save_it():
    s = TrainSettings(matryoshka_dims=[64, 128])
    assert s.matryoshka_dims == (64, 128)
    assert s.to_dict()["matryoshka_dims"] == (64, 128)
    # what train_settings.json holds reads back the same
    again = TrainSettings(**json.loads(json.dumps(s.to_dict())))
    assert again.matryoshka_dims == (64, 128)


def test_cli_flag_bad_value_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--backbone", "llama", "--data", "d.jsonl", "--out", "o",
              "--matryoshka-dims", "64,wide"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--matryoshka-dims" in err


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", pair_records(24))


def _train(pairs, folders, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pe_core.train(str(pairs), backbone="llama", model=str(folders["model"]),
                             prompting=str(folders["prompting"]), out=out, steps=2,
                             batch_size=8, lr=1e-3, progress=False, **kw)


def test_training_runs_with_widths_and_the_loss_is_theirs(pairs, tiny_folders, tmp_path):
    plain = _train(pairs, tiny_folders, tmp_path / "plain")
    nested = _train(pairs, tiny_folders, tmp_path / "nested", matryoshka_dims=(4, 8))
    assert nested.loss is not None and torch.isfinite(torch.tensor(nested.loss))
    # same seed, same data: only the widths differ, so a loss that did not change would
    # mean the trainer never passed them on
    assert nested.loss != pytest.approx(plain.loss, abs=1e-6)
    saved = json.loads((tmp_path / "nested" / "train_settings.json").read_text())
    assert saved["matryoshka_dims"] == [4, 8]


def test_training_with_a_width_above_d_b_fails_before_writing(pairs, tiny_folders, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="exceed the embedding width 32"):
        _train(pairs, tiny_folders, out, matryoshka_dims=(16, 64))
    assert not out.exists()


def test_cli_trains_with_the_flag(pairs, tiny_folders, tmp_path):
    out = tmp_path / "cli"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                     "--prompting", str(tiny_folders["prompting"]), "--data", str(pairs),
                     "--out", str(out), "--steps", "1", "--batch-size", "8", "--no-progress",
                     "--matryoshka-dims", "8,16"])
    assert code == 0
    assert json.loads((out / "train_settings.json").read_text())["matryoshka_dims"] == [8, 16]
