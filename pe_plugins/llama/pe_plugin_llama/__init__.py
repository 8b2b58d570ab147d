"""pe backbone plugin: Llama (Llama 2, 3, 3.1, 3.2 and Llama-architecture models).

The default model is pe's embedded default llama (shipped inside pe-core); any Hub
checkpoint of these model types works, e.g. ``model="meta-llama/Llama-3.2-1B"``.
"""

from __future__ import annotations

from typing import Any

from pe_core import hookimpl
from pe_core.plugins.backbones import BackboneSpec

TINY_CONFIGS = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256),
}


@hookimpl
def pe_register_backbones(registry: Any) -> None:
    registry.register(
        BackboneSpec(
            name="llama",
            model_types=("llama",),
            default_model="pe-default:llama",
            tiny_configs=TINY_CONFIGS,
        )
    )
