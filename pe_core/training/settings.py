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
from pe_core.options import BOTH, TRAIN, check_options, option, option_fields

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
                               default_text="default: --epochs passes", ge=1)
    epochs: float = option(1.0, help="passes over the data", cli=BOTH, group="schedule", gt=0)
    batch_size: int = option(32, help="global batch size, split across processes",
                             cli=BOTH, group="schedule", ge=1)
    # full fine-tuning of the small Prompting LLM; the fresh alignment needs a much larger
    # lr (measured: docs/benchmarks/choices.md, "Learning rates")
    lr: float = option(1e-4, help="Prompting LLM lr (full fine-tuning)", cli=BOTH,
                       group="schedule", gt=0)
    # None: decided by the method, since `pe align` starts from a trained alignment (same
    # measurements)
    alignment_lr: float | None = option(
        None, help="alignment lr", cli=BOTH, group="schedule",
        default_text="default: 1e-2 in train, 3e-3 in align", gt=0,
    )
    lora_lr: float = option(2e-4, help="lr of LoRA weights (Prompting LLM or the baseline)",
                            cli=BOTH, group="schedule", gt=0)
    weight_decay: float = option(0.01, help="AdamW weight decay", cli=BOTH, group="schedule",
                                 ge=0)
    warmup: float = option(0.05, help="fraction (<1) or number of warmup steps", cli=BOTH,
                           group="schedule", ge=0)
    max_grad_norm: float = option(1.0, help="gradient clipping norm (0: off)", cli=BOTH,
                                  group="schedule", ge=0)
    temperature: float = option(0.05, help="InfoNCE temperature", cli=BOTH, group="loss",
                                gt=0, le=1)
    # off by default: on SmolLM2-135M it keeps the soft tokens out of the sink state that
    # collapsed most 40-step runs, but the runs it saved still learnt little, and its
    # checks make a step dearer (docs/benchmarks/attention-sinks.md)
    sink_guard: float = option(0.0, help="weight of the penalty on soft tokens that turn "
                               "into attention sinks; > 0 also shortens steps that would "
                               "make one (0: off)", cli=BOTH, group="loss", ge=0)
    # Matryoshka representation learning: the InfoNCE at each prefix width too, so a
    # vector cut to one of them (truncate_dim, `dimensions`) keeps most of its score
    matryoshka_dims: tuple[int, ...] = option(
        (), help="also train these prefix widths of the embedding, comma-separated "
        "(64,128,256; each at most the backbone's width)", cli=BOTH, group="loss",
        metavar="D,D,...", default_text="default: off", ge=1,
    )
    # the fewest any row of a batch has, at most this
    hard_negatives: int = option(1, help="hard negatives per example", cli=BOTH, group="loss",
                                ge=0)
    # relaxed generation: no annealing by default, so training matches inference (tau=1)
    gumbel_tau_start: float = option(1.0, help="Gumbel-softmax temperature at step 0",
                                     cli=(TRAIN,), group="PromptEmbedder", gt=0)
    gumbel_tau_end: float = option(1.0, help="Gumbel-softmax temperature at the end",
                                   cli=(TRAIN,), group="PromptEmbedder", gt=0)
    gumbel_anneal_steps: int | None = option(
        None, help="steps to anneal the temperature over", cli=(TRAIN,),
        group="PromptEmbedder", default_text="default: all steps", ge=1,
    )
    # off by default: the noise-free relaxed softmax is what inference and ``pe align``
    # (its cached soft tokens) use, so training sees the prompt it is scored with, and
    # with the noise on real backbones learnt less in the same steps
    # (docs/benchmarks/quality.md, "On the real tier")
    gumbel_noise: bool = option(False, help="add Gumbel noise to the Prompting LLM's logits",
                                cli=(TRAIN,), group="PromptEmbedder")
    straight_through: bool = option(False, help="straight-through Gumbel-softmax",
                                    cli=(TRAIN,), group="PromptEmbedder")
    prompting_lora: int = option(0, help="peft LoRA of rank R on the Prompting LLM (0: full)",
                                 cli=(TRAIN,), group="PromptEmbedder", metavar="R", ge=0)
    # the LoRA baseline: E5-mistral recipe
    lora_r: int = option(16, help="LoRA baseline rank", cli=(TRAIN,), group="PromptEmbedder",
                        ge=1)
    lora_alpha: int = option(32, help="LoRA alpha", ge=1)
    lora_dropout: float = option(0.05, help="LoRA dropout", ge=0, lt=1)
    grad_cache_chunk: int = option(0, help="GradCache sub-batch size (0: off)", cli=BOTH,
                                   group="efficiency", ge=0)
    gradient_checkpointing: bool = option(False, help="gradient checkpointing", cli=BOTH,
                                          group="efficiency")
    bf16: bool | None = option(None, help="bf16 autocast", cli=BOTH, group="efficiency",
                               default_text="default: on where CUDA supports it")
    # on CPU by default: with torch's default kernels two identical runs part within a few
    # steps, which a short run on an unstable backbone carries into its dev score, and the
    # deterministic ones cost no step time (docs/training.md, "Reproducible runs"). Off by
    # default on CUDA, where some kernels
    # have no deterministic form (torch would only warn there)
    deterministic: bool | None = option(
        None, help="torch's deterministic kernels while training", cli=BOTH,
        group="efficiency", default_text="default: on for CPU, off on CUDA",
    )
    text_kv_cache_mb: float = option(
        2048.0, help="suffix: keep texts' keys/values across epochs (MB, 0: off)", cli=BOTH,
        group="efficiency", ge=0,
    )
    # off by default: cheaper steps only where the CPU has bf16 units (avx512_bf16, AMX),
    # slower than fp32 elsewhere, and the score it trains to depends on the backbone
    # (docs/benchmarks/train-efficiency.md, the text pass's precision)
    text_pass_bf16: bool = option(
        False, help="suffix: run the frozen text pass under bf16 autocast (faster on CPUs "
                    "with avx512_bf16/AMX and on GPUs; slower on CPUs without bf16 units)",
        cli=BOTH, group="efficiency",
    )
    # on by default: short runs on the real backbones collapse on some seeds
    # (docs/known-gaps.md), and a rollback costs nothing on a run that does not (pe_core/training/
    # guard.py says what it watches)
    divergence_guard: bool = option(
        True, help="no divergence guard (rolling back to the best state and lowering the "
        "lr when the loss spikes, returns to chance or the dev score drops)", cli=BOTH,
        group="schedule", flag="--no-divergence-guard",
    )
    guard_rollbacks: int = option(3, help="most rollbacks the divergence guard makes",
                                  cli=BOTH, group="schedule", ge=1)
    guard_lr_factor: float = option(0.5, help="lr multiplier at each rollback", cli=BOTH,
                                    group="schedule", gt=0, lt=1)
    save_every: int = option(200, help="checkpoint every N steps", cli=BOTH,
                             group="bookkeeping", ge=1)
    keep_checkpoints: int = option(2, help="checkpoints kept", cli=BOTH, group="bookkeeping",
                                  ge=1)
    eval_every: int = option(0, help="dev score every N steps (0: at the end)", cli=BOTH,
                             group="bookkeeping", ge=0)
    # held out of the training data when no dev data is given
    dev_size: int = option(0, help="hold out N training pairs as dev data", cli=BOTH,
                           group="bookkeeping", ge=0)
    eval_batch_size: int = option(32, help="batch size of the dev score", ge=1)
    seed: int = option(0, help="seed of data order, noise and initialisation", cli=BOTH,
                       group="schedule", ge=0, lt=2**63)
    progress: bool = option(True, help="no progress bar", cli=BOTH, flag="--no-progress")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        check_options(self)  # types and ranges, as each field declares them
        if self.alignment_lr is None:
            self.alignment_lr = 3e-3 if self.method == "align" else 1e-2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        """``train_settings.json``, with ``extra`` keys beside the fields."""
        record = {**self.to_dict(), **(extra or {})}
        (folder / SETTINGS_NAME).write_text(json.dumps(record, indent=2) + "\n")


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate TrainSettings fields from EmbedderConfig overrides; anything else is an
    error naming the valid keys."""
    from pe_core.model.config import EmbedderConfig

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
