"""The module that becomes the ONNX graph: token ids + mask in, normalised vector out.

The soft prompt of one instruction is baked in as a constant, so the graph holds the
frozen backbone only: no Prompting LLM, no alignment, no instruction at inference.

Example::

    graph = EmbeddingGraph.from_embedder(embedder, "Retrieve a passage that answers")
    vecs = graph(input_ids, attention_mask)          # (B, d_B), unit length
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pe_core.model.encoder import read


class EmbeddingGraph(nn.Module):
    """The frozen backbone reading ``[soft ; text]`` / ``[text ; soft]`` in ONE pass.

    The torch embedder computes a suffix prompt over a key/value cache of the text (it
    saves the text's backward at training time); an exported graph has no backward and
    no cache to keep, so it runs the full sequence once, through the same
    :func:`pe_core.model.encoder.read` (layout, positions and pooling) as the torch prefix.

    ``soft`` is ``(K, d_B)`` in raw embedding-row space (what
    ``PromptEmbedder.cached_soft_prompt`` returns) or None for the plain backbone.
    """

    def __init__(
        self,
        backbone: Any,
        soft: torch.Tensor | None,
        placement: str = "suffix",
        pooling: str = "last",
    ) -> None:
        super().__init__()
        self.model = backbone.model
        self.spec = backbone.spec
        self.placement = placement
        self.pooling = pooling
        if soft is None:
            self.register_buffer("prompt", None)
        else:
            # apply the plugin's scaling once here, so the graph stores exactly the
            # vectors the backbone reads (e.g. Gemma's embed_scale) as its constant
            prompt = backbone.prompt_embeds(soft.detach()[None])[0]
            self.register_buffer("prompt", prompt.clone())

    @classmethod
    def from_embedder(cls, embedder: Any, instruction: str | None) -> EmbeddingGraph:
        """The graph for ``instruction`` (None: the plain backbone, no soft prompt)."""
        soft = None if instruction is None else embedder.cached_soft_prompt(instruction)
        cfg = embedder.config
        return cls(embedder.backbone, soft, cfg.placement, cfg.pooling).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        text = self.spec.token_embeddings(self.model, input_ids)
        prompt = None
        if self.prompt is not None:
            prompt = self.prompt.to(text.dtype).unsqueeze(0).expand(input_ids.shape[0], -1, -1)
        pooled = read(self.model, text, attention_mask, prompt, self.placement, self.pooling)
        return F.normalize(pooled.float(), dim=-1)
