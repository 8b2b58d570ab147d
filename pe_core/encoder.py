"""The frozen backbone reading ``[soft ; text]`` or ``[text ; soft]`` (DESIGN §1.3–1.4).

Soft vectors arrive in the backbone's raw token-embedding space; the plugin's
``soft_prompt_hook`` scales them the way the installed transformers expects.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pe_core.backbones import BackboneSpec


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding on either side: ``cumsum(mask) - 1``."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def last_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real position, whatever the padding side."""
    idx = torch.arange(mask.shape[1], device=mask.device)
    return (mask.long() * idx).argmax(-1)


def mean_pool(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    w = weights.to(hidden.dtype).unsqueeze(-1)
    return (hidden * w).sum(1) / w.sum(1).clamp(min=1.0)


class BackboneEncoder(nn.Module):
    """A frozen transformers base model (no LM head) with its plugin spec.

    Example::

        enc = BackboneEncoder(AutoModel.from_pretrained(path), spec)
        pooled = enc(input_ids, attention_mask, soft, placement="suffix", pooling="last")
    """

    def __init__(self, model: Any, spec: BackboneSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> BackboneEncoder:
        # frozen: dropout stays off whatever the surrounding module does
        super().train(mode)
        self.model.eval()
        return self

    @property
    def d(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def embedding_table(self) -> torch.Tensor:
        return self.model.get_input_embeddings().weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        soft: torch.Tensor | None,
        placement: str = "suffix",
        pooling: str = "last",
    ) -> torch.Tensor:
        """Pooled (not normalised) hidden state, shape ``(B, d_B)``.

        ``soft`` is ``(B, K, d_B)`` in raw embedding-row space, or None for no prompt.
        """
        if soft is None:
            return self._plain(input_ids, attention_mask, pooling)
        if placement == "prefix":
            return self._prefix(input_ids, attention_mask, soft, pooling)
        return self._suffix(input_ids, attention_mask, soft, pooling)

    def _embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.spec.token_embeddings(self.model, input_ids)

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, **kw: Any) -> Any:
        return self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, **kw)

    def _plain(self, ids: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
        hidden = self._run(self._embed_text(ids), mask, positions(mask)).last_hidden_state
        if pooling == "mean":
            return mean_pool(hidden, mask)
        return hidden[torch.arange(len(ids), device=ids.device), last_index(mask)]

    def _prefix(
        self, ids: torch.Tensor, mask: torch.Tensor, soft: torch.Tensor, pooling: str
    ) -> torch.Tensor:
        batch, k = soft.shape[0], soft.shape[1]
        text = self._embed_text(ids)
        u = self.spec.soft_prompt_hook(self.model, soft.to(text.dtype))
        embeds = torch.cat([u, text], dim=1)
        full = torch.cat([mask.new_ones(batch, k), mask], dim=1)
        hidden = self._run(embeds, full, positions(full)).last_hidden_state
        if pooling == "mean":  # the text positions: they are what the prompt steers
            return mean_pool(hidden, torch.cat([mask.new_zeros(batch, k), mask], dim=1))
        return hidden[torch.arange(batch, device=ids.device), last_index(full)]

    def _suffix(
        self, ids: torch.Tensor, mask: torch.Tensor, soft: torch.Tensor, pooling: str
    ) -> torch.Tensor:
        # Nothing trainable feeds the text positions, so their keys/values are computed
        # once without grad; only the K soft positions run with grad. The cache is local
        # to this call and is mutated by the second pass, so it is never reused.
        batch, k = soft.shape[0], soft.shape[1]
        with torch.no_grad():
            text = self._embed_text(ids)
            cache = self._run(text, mask, positions(mask), use_cache=True).past_key_values
        u = self.spec.soft_prompt_hook(self.model, soft.to(text.dtype))
        full = torch.cat([mask, mask.new_ones(batch, k)], dim=1)
        pos = mask.long().sum(-1, keepdim=True) + torch.arange(k, device=ids.device)
        hidden = self._run(u, full, pos, past_key_values=cache, use_cache=True).last_hidden_state
        return hidden.mean(1) if pooling == "mean" else hidden[:, -1]

    def reference(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        soft: torch.Tensor,
        placement: str,
        pooling: str,
    ) -> torch.Tensor:
        """The same result computed in one full pass per row, without any cache or
        padding: the conformance suite's ground truth."""
        rows = []
        for i in range(input_ids.shape[0]):
            keep = attention_mask[i].bool()
            ids = input_ids[i][keep][None]
            text = self._embed_text(ids)
            u = self.spec.soft_prompt_hook(self.model, soft[i : i + 1].to(text.dtype))
            k, n = u.shape[1], ids.shape[1]
            embeds = torch.cat([u, text] if placement == "prefix" else [text, u], dim=1)
            hidden = self.model(inputs_embeds=embeds).last_hidden_state[0]
            if pooling == "last":
                rows.append(hidden[-1])
            elif placement == "prefix":
                rows.append(hidden[k:].mean(0))
            else:
                rows.append(hidden[n:].mean(0))
        return torch.stack(rows)
