"""Settings declared once on their fields: the ``pe train`` / ``pe align`` flags and align's
inherited and fixed lists are read from the field metadata."""

from __future__ import annotations

import pytest

from pe_core.cli.main import build_parser
from pe_core.cli.train_cmd import _options
from pe_core.model.config import EmbedderConfig
from pe_core.options import (
    ALIGN,
    TRAIN,
    cli_fields,
    is_int_list,
    is_optional,
    option_fields,
    transfer_names,
    value_type,
)
from pe_core.training.settings import TrainSettings, split_kwargs

REQUIRED = {
    TRAIN: ["train", "--backbone", "llama", "--data", "d.jsonl", "--out", "o"],
    ALIGN: ["align", "--from", "src", "--backbone", "qwen", "--data", "d.jsonl", "--out", "o"],
}


def _flag_values(cls, f):
    """A command-line value for field ``f`` other than its default, and what it parses to."""
    meta = f.metadata["pe_option"]
    if value_type(cls, f) is bool:
        if is_optional(cls, f):
            return ["off"], False
        return [], not f.default
    if is_int_list(value_type(cls, f)):
        return ["4,8"], (4, 8)
    if meta["choices"]:
        value = next(c for c in meta["choices"] if c != f.default)
        return [value], value
    return {float: (["0.25"], 0.25), int: (["3"], 3),
            str: (["Represent it"], "Represent it")}[value_type(cls, f)]


def _flag(f):
    return f.metadata["pe_option"]["flag"] or "--" + f.name.replace("_", "-")


@pytest.mark.parametrize("command", [TRAIN, ALIGN])
def test_every_declared_flag_parses_to_its_field(command):
    parser = build_parser()
    declared = [(cls, f) for cls in (TrainSettings, EmbedderConfig)
                for f in cli_fields(cls, command)]
    assert {f.name for _, f in declared} >= {"steps", "lr", "seed", "placement", "max_length"}
    for cls, f in declared:
        argv, expected = _flag_values(cls, f)
        args = parser.parse_args([*REQUIRED[command], _flag(f), *argv])
        got = _options(args, command)
        assert got == {f.name: expected}, f.name
        assert type(got[f.name]) is type(expected)
    # nothing given: nothing passed on, so the fields' own defaults apply
    assert _options(parser.parse_args(REQUIRED[command]), command) == {}


def test_flags_follow_the_declaration():
    train = {f.name for c in (TrainSettings, EmbedderConfig) for f in cli_fields(c, TRAIN)}
    align = {f.name for c in (TrainSettings, EmbedderConfig) for f in cli_fields(c, ALIGN)}
    assert {"prompting_lora", "gumbel_tau_start", "num_soft_tokens", "pooling"} <= train - align
    assert align <= train
    assert "method" not in train and "lora_alpha" not in train  # declared without a flag
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([*REQUIRED[ALIGN], "--num-soft-tokens", "3"])


def test_help_shows_each_default_from_the_field(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "InfoNCE temperature (default 0.05)" in out
    assert "global batch size, split across processes (default 32)" in out
    assert "alignment lr (default: 1e-2 in train, 3e-3 in align)" in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["align", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "tokens per text (default: the source run's)" in out


def test_empty_document_instruction_means_none():
    args = build_parser().parse_args([*REQUIRED[TRAIN], "--document-instruction", ""])
    assert _options(args, TRAIN) == {"document_instruction": None}


def test_transfer_lists_and_model_options_come_from_the_fields():
    assert transfer_names(EmbedderConfig, "fixed") == ["num_soft_tokens", "template"]
    assert transfer_names(EmbedderConfig, "inherit") == [
        "placement", "pooling", "soft_norm", "document_instruction", "max_length",
    ]
    assert transfer_names(EmbedderConfig, "source-prompting") == [
        "prompting_id", "prompting_revision",
    ]
    options = {f.name for f in option_fields(EmbedderConfig)}
    assert options.isdisjoint({"backbone", "d_P", "d_B", "training_data_hash", "eval_results",
                               "pe_version"})
    settings, config = split_kwargs({"steps": 3, "pooling": "mean", "model_id": "m"})
    assert settings == {"steps": 3} and config == {"pooling": "mean", "model_id": "m"}
