"""Every training setting in one JSON-able dataclass, saved as ``train_settings.json``.

Defaults are pe's choices where the paper is silent; each is explained next to it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError

METHODS = ("pe", "align", "lora", "full")
SETTINGS_NAME = "train_settings.json"


@dataclass
class TrainSettings:
    """How to train. ``pe_core.train(..., **kwargs)`` accepts any field as a keyword.

    Example::

        TrainSettings(batch_size=64, temperature=0.02, grad_cache_chunk=16)
    """

    method: str = "pe"
    # length: ``steps`` wins; otherwise ``epochs`` passes over the data
    steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 32  # global: split across processes
    # Full fine-tuning of the small Prompting LLM, and a fresh linear alignment that needs
    # a much larger lr. Measured on the default llama (suffix, 150 steps, dev nDCG@10):
    # 1e-4 / 1e-2 reached 0.42 (last-token) and 0.46 (mean pooling), against 0.48 for a
    # free soft prompt tuned directly at 1e-2 (the most any prompt could do there).
    lr: float = 1e-4
    # None: 1e-2 in `pe train` (a fresh alignment, trained with the Prompting LLM) and
    # 3e-3 in `pe align` (it starts from the carried trained alignment). Measured on the
    # default qwen from a llama run, dev nDCG@10 after 10 / 50 / 150 align steps: 3e-3
    # 0.319 / 0.372 / 0.379; 1e-2 0.331 / 0.355 / 0.371; 3e-2 0.272 / 0.321 / 0.331.
    alignment_lr: float | None = None
    lora_lr: float = 2e-4  # LoRA on the Prompting LLM and the LoRA baseline
    weight_decay: float = 0.01
    warmup: float = 0.05  # < 1: fraction of the steps; >= 1: a number of steps
    max_grad_norm: float = 1.0
    # loss
    temperature: float = 0.05
    hard_negatives: int = 1  # per example (the fewest any row of a batch has, at most this)
    # relaxed generation: no annealing by default, so training matches inference (tau=1)
    gumbel_tau_start: float = 1.0
    gumbel_tau_end: float = 1.0
    gumbel_anneal_steps: int | None = None  # None: all steps
    gumbel_noise: bool = True
    straight_through: bool = False
    # what trains
    prompting_lora: int = 0  # > 0: peft LoRA of this rank on the Prompting LLM
    lora_r: int = 16  # the LoRA baseline: E5-mistral recipe
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # efficiency
    grad_cache_chunk: int = 0  # > 0: GradCache with sub-batches of this many texts
    gradient_checkpointing: bool = False
    bf16: bool | None = None  # None: on where CUDA supports bf16
    text_kv_cache_mb: float = 2048.0  # suffix: keep texts' keys/values across epochs
    # bookkeeping
    save_every: int = 200
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: evaluate at the end only (when there is dev data)
    dev_size: int = 0  # held out of the training data when no dev data is given
    eval_batch_size: int = 32
    seed: int = 0
    progress: bool = True

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

    config_names = {f.name for f in fields(EmbedderConfig)} - {
        "backbone", "d_P", "d_B", "training_data_hash", "eval_results", "pe_version",
    }
    settings = {k: v for k, v in kwargs.items() if k in TrainSettings.names()}
    config = {k: v for k, v in kwargs.items() if k in config_names}
    unknown = sorted(set(kwargs) - set(settings) - set(config))
    if unknown:
        raise ConfigError(
            f"unknown training option(s) {unknown}; settings are "
            f"{sorted(TrainSettings.names())} and model options {sorted(config_names)}"
        )
    return settings, config
