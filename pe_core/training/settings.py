"""Every training setting in one JSON-able dataclass, saved as ``train_settings.json``.

Defaults are pe's choices where the paper is silent; each is explained next to it. Every
field declares its help and its ``pe train`` / ``pe align`` flag (:mod:`pe_core.options`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError
from pe_core.options import BOTH, TRAIN, option, option_fields

METHODS = ("pe", "align", "lora", "full")
SETTINGS_NAME = "train_settings.json"


@dataclass
class TrainSettings:
    """How to train. ``pe_core.train(..., **kwargs)`` accepts any field as a keyword.

    Example::

        TrainSettings(batch_size=64, temperature=0.02, grad_cache_chunk=16)
    """

    method: str = "pe"  # set by `pe train --method` / `pe align`, not a settings flag
    # length: ``steps`` wins; otherwise ``epochs`` passes over the data
    steps: int | None = option(None, help="optimizer steps", cli=BOTH, group="schedule",
                               default_text="default: --epochs passes")
    epochs: float = option(1.0, help="passes over the data", cli=BOTH, group="schedule")
    batch_size: int = option(32, help="global batch size, split across processes",
                             cli=BOTH, group="schedule")
    # full fine-tuning of the small Prompting LLM; the fresh alignment needs a much larger
    # lr (measured: benchmarks/results/choices.md, "Learning rates")
    lr: float = option(1e-4, help="Prompting LLM lr (full fine-tuning)", cli=BOTH,
                       group="schedule")
    # None: decided by the method, since `pe align` starts from a trained alignment (same
    # measurements)
    alignment_lr: float | None = option(
        None, help="alignment lr", cli=BOTH, group="schedule",
        default_text="default: 1e-2 in train, 3e-3 in align",
    )
    lora_lr: float = option(2e-4, help="lr of LoRA weights (Prompting LLM or the baseline)",
                            cli=BOTH, group="schedule")
    weight_decay: float = option(0.01, help="AdamW weight decay", cli=BOTH, group="schedule")
    warmup: float = option(0.05, help="fraction (<1) or number of warmup steps", cli=BOTH,
                           group="schedule")
    max_grad_norm: float = option(1.0, help="gradient clipping norm", cli=BOTH,
                                  group="schedule")
    temperature: float = option(0.05, help="InfoNCE temperature", cli=BOTH, group="loss")
    # the fewest any row of a batch has, at most this
    hard_negatives: int = option(1, help="hard negatives per example", cli=BOTH, group="loss")
    # relaxed generation: no annealing by default, so training matches inference (tau=1)
    gumbel_tau_start: float = option(1.0, help="Gumbel-softmax temperature at step 0",
                                     cli=(TRAIN,), group="PromptEmbedder")
    gumbel_tau_end: float = option(1.0, help="Gumbel-softmax temperature at the end",
                                   cli=(TRAIN,), group="PromptEmbedder")
    gumbel_anneal_steps: int | None = option(
        None, help="steps to anneal the temperature over", cli=(TRAIN,),
        group="PromptEmbedder", default_text="default: all steps",
    )
    gumbel_noise: bool = option(True, help="Gumbel noise in training")
    straight_through: bool = option(False, help="straight-through Gumbel-softmax",
                                    cli=(TRAIN,), group="PromptEmbedder")
    prompting_lora: int = option(0, help="peft LoRA of rank R on the Prompting LLM (0: full)",
                                 cli=(TRAIN,), group="PromptEmbedder", metavar="R")
    # the LoRA baseline: E5-mistral recipe
    lora_r: int = option(16, help="LoRA baseline rank", cli=(TRAIN,), group="PromptEmbedder")
    lora_alpha: int = option(32, help="LoRA alpha")
    lora_dropout: float = option(0.05, help="LoRA dropout")
    grad_cache_chunk: int = option(0, help="GradCache sub-batch size (0: off)", cli=BOTH,
                                   group="efficiency")
    gradient_checkpointing: bool = option(False, help="gradient checkpointing", cli=BOTH,
                                          group="efficiency")
    bf16: bool | None = option(None, help="bf16 autocast", cli=BOTH, group="efficiency",
                               default_text="default: on where CUDA supports it")
    text_kv_cache_mb: float = option(
        2048.0, help="suffix: keep texts' keys/values across epochs (MB, 0: off)", cli=BOTH,
        group="efficiency",
    )
    # off by default: measured on SmolLM2-135M (README: Benchmarks, the text pass's
    # precision) before it may become a default
    text_pass_bf16: bool = option(
        False, help="suffix: run the frozen text pass under bf16 autocast", cli=BOTH,
        group="efficiency",
    )
    save_every: int = option(200, help="checkpoint every N steps", cli=BOTH,
                             group="bookkeeping")
    keep_checkpoints: int = option(2, help="checkpoints kept", cli=BOTH, group="bookkeeping")
    eval_every: int = option(0, help="dev score every N steps (0: at the end)", cli=BOTH,
                             group="bookkeeping")
    # held out of the training data when no dev data is given
    dev_size: int = option(0, help="hold out N training pairs as dev data", cli=BOTH,
                           group="bookkeeping")
    eval_batch_size: int = option(32, help="batch size of the dev score")
    seed: int = option(0, help="seed of data order, noise and initialisation", cli=BOTH,
                       group="schedule")
    progress: bool = option(True, help="no progress bar", cli=BOTH, flag="--no-progress")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.alignment_lr is None:
            self.alignment_lr = 3e-3 if self.method == "align" else 1e-2
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.steps is None and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if not 0.0 < self.temperature <= 1.0:
            raise ConfigError(f"temperature must be in (0, 1], got {self.temperature}")
        if self.gumbel_tau_start <= 0 or self.gumbel_tau_end <= 0:
            raise ConfigError("Gumbel temperatures must be > 0")
        for name in ("lr", "alignment_lr", "lora_lr"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.hard_negatives < 0 or self.grad_cache_chunk < 0 or self.prompting_lora < 0:
            raise ConfigError("hard_negatives, grad_cache_chunk and prompting_lora must be >= 0")
        if self.save_every < 1:
            raise ConfigError(f"save_every must be >= 1, got {self.save_every}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def save(self, folder: Path) -> None:
        (folder / SETTINGS_NAME).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate TrainSettings fields from EmbedderConfig overrides; anything else is an
    error naming the valid keys."""
    from pe_core.config import EmbedderConfig

    config_names = {f.name for f in option_fields(EmbedderConfig)}
    settings = {k: v for k, v in kwargs.items() if k in TrainSettings.names()}
    config = {k: v for k, v in kwargs.items() if k in config_names}
    unknown = sorted(set(kwargs) - set(settings) - set(config))
    if unknown:
        raise ConfigError(
            f"unknown training option(s) {unknown}; settings are "
            f"{sorted(TrainSettings.names())} and model options {sorted(config_names)}"
        )
    return settings, config
