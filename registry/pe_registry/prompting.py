"""``pe_prompting.json``: what a published (trained) Prompting LLM is.

A trained Prompting LLM is an ordinary transformers causal-LM folder (``config.json``,
``model.safetensors``, tokenizer files); this file, next to them, says which base model it
was trained from and for which soft-token setup, the way ``pe_config.json`` does for an
alignment.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pe_core.errors import ConfigError, MissingFileError
from pe_core.model.config import EmbedderConfig
from pe_registry.atomic import write_json_atomic

PROMPTING_NAME = "pe_prompting.json"
FORMAT = "pe-prompting/1"


@dataclass
class PromptingInfo:
    """Metadata of a trained Prompting LLM.

    Example::

        info = PromptingInfo.from_embedder_config(EmbedderConfig.load("runs/llama"))
        info.save("staging/llama-prompting")
    """

    d_P: int
    num_soft_tokens: int = 5
    base_model: str | None = None
    base_revision: str | None = None
    backbone: str | None = None
    model_id: str | None = None
    training_data_hash: str | None = None
    eval_results: dict[str, Any] = field(default_factory=dict)
    pe_version: str | None = None
    format: str = FORMAT

    def __post_init__(self) -> None:
        if self.format != FORMAT:
            raise ConfigError(f"{PROMPTING_NAME} has format {self.format!r}, expected {FORMAT!r}")
        if not isinstance(self.d_P, int) or self.d_P < 1:
            raise ConfigError(f"{PROMPTING_NAME}: d_P must be a positive integer, got {self.d_P!r}")

    @classmethod
    def from_embedder_config(cls, cfg: EmbedderConfig) -> PromptingInfo:
        """The Prompting LLM of a training run: trained from ``cfg.prompting_id``."""
        return cls(
            d_P=cfg.d_P,
            num_soft_tokens=cfg.num_soft_tokens,
            base_model=cfg.prompting_id,
            base_revision=cfg.prompting_revision,
            backbone=cfg.backbone,
            model_id=cfg.model_id,
            training_data_hash=cfg.training_data_hash,
            eval_results=dict(cfg.eval_results),
            pe_version=cfg.pe_version,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        return write_json_atomic(Path(folder) / PROMPTING_NAME, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path) -> PromptingInfo:
        path = Path(folder) / PROMPTING_NAME
        if not path.is_file():
            raise MissingFileError(f"{path} not found: {folder} is not a pe prompting artifact")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            extra = sorted(set(data) - known) if isinstance(data, dict) else data
            raise ConfigError(f"{path} has unknown keys {extra}: upgrade pe-registry")
        return cls(**data)
