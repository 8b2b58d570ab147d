"""pe backbone plugin: Qwen2 / Qwen2.5 and Qwen3.

The default model is pe's embedded default qwen (shipped inside pe-core); any Hub
checkpoint of these model types works, e.g. ``model="Qwen/Qwen2.5-0.5B"``.
"""

from __future__ import annotations

from typing import Any

from pe_core import hookimpl
from pe_core.plugins.backbones import BackboneSpec

TINY_CONFIGS = {
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
    "qwen3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=256),
}


@hookimpl
def pe_register_backbones(registry: Any) -> None:
    registry.register(
        BackboneSpec(
            name="qwen",
            model_types=("qwen2", "qwen3"),
            default_model="pe-default:qwen",
            tiny_configs=TINY_CONFIGS,
        )
    )
