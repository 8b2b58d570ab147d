"""pe backbone plugin: Mistral.

The default model is pe's embedded default mistral (shipped inside pe-core); any Hub
checkpoint of these model types works, e.g. ``model="mistralai/Mistral-7B-v0.3"``.
"""

from __future__ import annotations

from typing import Any

from pe_core import hookimpl
from pe_core.plugins.backbones import BackboneSpec

TINY_CONFIGS = {
    "mistral": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, sliding_window=128,
                    max_position_embeddings=256),
}


@hookimpl
def pe_register_backbones(registry: Any) -> None:
    registry.register(
        BackboneSpec(
            name="mistral",
            model_types=("mistral",),
            default_model="pe-default:mistral",
            tiny_configs=TINY_CONFIGS,
        )
    )
