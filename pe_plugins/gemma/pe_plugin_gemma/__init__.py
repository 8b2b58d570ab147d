"""pe backbone plugin: Gemma, Gemma 2 and Gemma 3 (text).

The default model is pe's embedded default gemma (shipped inside pe-core); any Hub
checkpoint of these model types works, e.g. ``model="google/gemma-2b"``.
"""

from __future__ import annotations

from typing import Any

from pe_core import hookimpl
from pe_core.plugins.backbones import BackboneSpec

TINY_CONFIGS = {
    "gemma": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                  max_position_embeddings=256),
    "gemma2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   sliding_window=128, max_position_embeddings=256),
    "gemma3_text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                        sliding_window=128, max_position_embeddings=256),
}



@hookimpl
def pe_register_backbones(registry: Any) -> None:
    registry.register(
        BackboneSpec(
            name="gemma",
            model_types=("gemma", "gemma2", "gemma3_text"),
            default_model="pe-default:gemma",
            tiny_configs=TINY_CONFIGS,
            # Soft vectors get the token-embedding scale (sqrt(hidden)) exactly where the
            # installed transformers applies it: the default hook follows the embedding
            # module's own embed_scale (Gemma 3 on 4.57, all Gemma on 5.x) and adds
            # nothing where GemmaModel.forward scales inputs_embeds itself (Gemma on
            # 4.57). The conformance suite checks this against input_ids.
            # Gemma 2 caps attention logits (soft-capping), which only the eager kernel
            # computes; Gemma and Gemma 3 do not, so SDPA is exact there and faster.
            # The conformance suite checks each against the cache-free reference.
            attn_implementation={"gemma": "sdpa", "gemma2": "eager", "gemma3_text": "sdpa"},
        )
    )
