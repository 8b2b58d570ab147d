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

from pe_core.encoder import last_index, mean_pool, positions


class EmbeddingGraph(nn.Module):
    """The frozen backbone reading ``[soft ; text]`` / ``[text ; soft]`` in ONE pass.

    The torch embedder computes a suffix prompt over a key/value cache of the text (it
    saves the text's backward at training time); an exported graph has no backward and
    no cache to keep, so it runs the full sequence once. Position ids come from the
    cumulative mask, which gives every row's soft tokens the positions
    ``text length + arange(K)`` whatever the padding side.

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
            dtype = self.model.get_input_embeddings().weight.dtype
            prompt = self.spec.soft_prompt_hook(self.model, soft.detach().to(dtype))
            self.register_buffer("prompt", prompt.clone())

    @classmethod
    def from_embedder(cls, embedder: Any, instruction: str | None) -> EmbeddingGraph:
        """The graph for ``instruction`` (None: the plain backbone, no soft prompt)."""
        soft = None if instruction is None else embedder.cached_soft_prompt(instruction)
        cfg = embedder.config
        return cls(embedder.backbone, soft, cfg.placement, cfg.pooling).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        text = self.spec.token_embeddings(self.model, input_ids)
        if self.prompt is None:
            hidden = self._run(text, attention_mask)
            if self.pooling == "mean":
                pooled = mean_pool(hidden, attention_mask)
            else:
                pooled = _gather_last(hidden, attention_mask)
            return F.normalize(pooled.float(), dim=-1)

        batch, k = input_ids.shape[0], self.prompt.shape[0]
        prompt = self.prompt.to(text.dtype).unsqueeze(0).expand(batch, -1, -1)
        ones = torch.ones_like(attention_mask[:, :1]).expand(batch, k)
        zeros = torch.zeros_like(ones)
        if self.placement == "prefix":
            embeds = torch.cat([prompt, text], dim=1)
            full = torch.cat([ones, attention_mask], dim=1)
            text_or_soft = torch.cat([zeros, attention_mask], dim=1)  # mean: text positions
        else:
            embeds = torch.cat([text, prompt], dim=1)
            full = torch.cat([attention_mask, ones], dim=1)
            text_or_soft = torch.cat([torch.zeros_like(attention_mask), ones], dim=1)
        hidden = self._run(embeds, full)
        if self.pooling == "mean":  # same positions as the torch embedder averages
            pooled = mean_pool(hidden, text_or_soft)
        elif self.placement == "suffix":
            pooled = hidden[:, -1]  # the last soft token is always the last column
        else:
            pooled = _gather_last(hidden, full)
        return F.normalize(pooled.float(), dim=-1)

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask))
        return out.last_hidden_state


def _gather_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, last_index(mask)]
