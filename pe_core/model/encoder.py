"""The frozen backbone reading ``[soft ; text]`` or ``[text ; soft]``.

Soft vectors arrive in the backbone's raw token-embedding space; the plugin's
``soft_prompt_hook`` scales them the way the installed transformers expects. Where the
positions go is :class:`pe_core.model.layout.Layout`, what is pooled is
:func:`pe_core.model.pooling.pool`; this module only runs the model over them, in one of two
ways: :func:`read` (the whole sequence in one pass) or, for a suffix,
:meth:`BackboneEncoder.text_cache` then :meth:`BackboneEncoder.soft_pass`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pe_core.model.layout import Layout, align_text
from pe_core.model.pooling import pool
from pe_core.plugins.backbones import BackboneSpec


def read(
    model: Any,
    text: torch.Tensor,
    mask: torch.Tensor,
    prompt: torch.Tensor | None,
    placement: str,
    pooling: str,
) -> torch.Tensor:
    """One pass over the whole sequence; pooled (not normalised) ``(B, d_B)``.

    ``text`` is the text's ``inputs_embeds`` ``(B, T, d_B)``, ``prompt`` the soft prompt
    ``(B, K, d_B)`` already through the plugin's hook, or None for the text alone.

    Example::

        pooled = read(model, spec.token_embeddings(model, ids), mask, None, "suffix", "last")
    """
    lay = Layout(mask) if prompt is None else Layout(mask, prompt.shape[1], placement)
    hidden = model(
        inputs_embeds=lay.join(text, prompt), attention_mask=lay.mask, position_ids=lay.positions
    ).last_hidden_state
    return pool(hidden, lay, pooling)


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
        if soft is not None and placement == "suffix":
            cache = self.text_cache(input_ids, attention_mask)
            return self.soft_pass(cache, attention_mask, soft, pooling)
        prompt = None if soft is None else self.prompt_embeds(soft)
        return read(
            self.model, self._embed_text(input_ids), attention_mask, prompt, placement, pooling
        )

    def _embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.spec.token_embeddings(self.model, input_ids)

    def prompt_embeds(self, soft: torch.Tensor) -> torch.Tensor:
        """Soft vectors ``(B, K, d_B)`` in raw embedding-row space -> ``inputs_embeds``."""
        return self.spec.soft_prompt_hook(self.model, soft.to(self.embedding_table.dtype))

    @torch.no_grad()
    def text_cache(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   cache: Any = None) -> Any:
        """The text's keys/values for every layer, from a pass over the text alone.

        Nothing trainable feeds the text positions of a suffix, so this runs without
        grad. ``cache`` is the (empty) cache to fill; None lets the model build its own.
        """
        # the text as a suffix's layout places it: against the end (see Layout)
        input_ids, attention_mask = align_text(input_ids, attention_mask, to_end=True)
        lay = Layout(attention_mask)
        return self.model(
            inputs_embeds=self._embed_text(input_ids), attention_mask=lay.mask,
            position_ids=lay.positions, past_key_values=cache, use_cache=True,
        ).past_key_values

    def soft_pass(
        self, cache: Any, attention_mask: torch.Tensor, soft: torch.Tensor, pooling: str
    ) -> torch.Tensor:
        """The ``K`` soft positions of ``[text ; soft]`` after :meth:`text_cache`; pooled
        (not normalised) ``(B, d_B)``. The cache is extended in place: use it once."""
        lay = Layout(attention_mask, soft.shape[1], "suffix")
        hidden = self.model(
            inputs_embeds=self.prompt_embeds(soft), attention_mask=lay.mask,
            # explicit positions: right-padded rows are silently wrong without them
            position_ids=lay.positions[:, lay.soft_columns],
            past_key_values=cache, use_cache=True,
        ).last_hidden_state
        return pool(hidden, lay, pooling)

    def reference(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        soft: torch.Tensor,
        placement: str,
        pooling: str,
    ) -> torch.Tensor:
        """The same result computed in one full pass per row, without any cache,
        padding, attention mask or explicit positions: the conformance suite's ground
        truth."""
        rows = []
        for i in range(input_ids.shape[0]):
            ids = input_ids[i][attention_mask[i].bool()][None]
            prompt = self.prompt_embeds(soft[i : i + 1])
            lay = Layout(torch.ones_like(ids), prompt.shape[1], placement)
            hidden = self.model(inputs_embeds=lay.join(self._embed_text(ids), prompt))
            rows.append(pool(hidden.last_hidden_state, lay, pooling)[0])
        return torch.stack(rows)


def max_positions(model: Any) -> int | None:
    """Positions a transformers model was built for (None: its config does not say)."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) else None
