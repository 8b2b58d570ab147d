"""A penalty that keeps trained soft tokens from turning into attention sinks.

Decoder LLMs hold a few tokens (above all the first one) in a *massive activation*
state: from the second layer on their hidden norm is tens to hundreds of times the
others', and the rest of the sequence attends to them to attend to nothing. A soft
token can be trained into that state. On SmolLM2-135M, 40 ``pe train`` steps from the
toy Prompting LLM put one or more of the five soft tokens there in most seeds: their
hidden norm at layer 15 reached 18,000-24,000, as much as the first text token's
(median text token: 156). The last soft token then reads the sink instead of the text,
every text gets nearly the same embedding, and the contrastive loss sits at chance
(``ln`` of the candidates per query) for the rest of the run (docs/benchmarks/
attention-sinks.md, the sink guard).

:class:`SinkGuard` places each step's aligned soft prompts after a short fixed context,
runs the frozen backbone over those few positions and penalises every soft position
whose hidden norm, in the first half of the layers, exceeds ``margin`` times the median
norm of the context's tokens at the same layer (its first token, the model's own sink,
left out). Soft tokens that stay as ordinary as text cost nothing; the penalty grows with
the log of the excess. The probe is a dozen positions per instruction, whatever the
batch, so it costs a small fraction of a step.

The penalty pulls a sink back out when it forms gradually, but one large optimizer step
can put a token deep inside, where the norm hardly responds any more (measured: a run at
alignment lr 1e-2 stayed at 55x for 37 steps). So the step itself is guarded too
(:func:`shortened_step`): a step that would take a soft token past twice the margin is
halved until it does not. The penalty starts below that limit on purpose: with both at
the same ratio, the contrastive gradient kept pressing soft tokens against the limit and
from step 24 of 40 on every step was dropped (SmolLM2-135M, alignment lr 1e-2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pe_core.model.encoder import BackboneEncoder

# ordinary words, no punctuation or line break (some models make those sinks too)
CONTEXT = "the text that comes before the soft prompt reads like this one"


class SinkGuard:
    """``guard(soft)`` -> the penalty (a scalar with grad) for soft prompts ``(U, K, d_B)``.

    Example::

        guard = SinkGuard(embedder.backbone, embedder.tokenizer, weight=1.0)
        loss = info_nce_loss + guard(soft_prompts)
        guard.last  # {"sink_penalty": ..., "sink_ratio": ...} of that call
    """

    def __init__(self, backbone: BackboneEncoder, tokenizer: Any, weight: float,
                 margin: float = 3.0, context: str = CONTEXT) -> None:
        if weight <= 0 or margin <= 0:
            raise ValueError(f"weight and margin must be > 0, got {weight} and {margin}")
        self.backbone = backbone
        self.weight = weight
        self.margin = margin
        device = backbone.embedding_table.device
        ids = tokenizer(context, add_special_tokens=True)["input_ids"]
        self.ids = torch.tensor([ids], device=device)
        with torch.no_grad():
            hidden = self._hidden(None)
        n_layers = len(hidden) - 1  # hidden_states[0] is the input
        self.layers = slice(1, max(1, n_layers // 2) + 1)
        # (layers,): median norm of the context tokens, the first one left out
        self.reference = torch.stack(
            [h[0, 1:].float().norm(dim=-1).median() for h in hidden[self.layers]])
        self.last: dict[str, float] = {}

    @property
    def limit(self) -> float:
        """The ratio no optimizer step may take a soft token past (twice the margin: the
        penalty has been pushing back for a while before a step is shortened)."""
        return 2 * self.margin

    def _hidden(self, soft: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        model = self.backbone.model
        context = self.backbone.spec.token_embeddings(model, self.ids)
        if soft is not None:
            context = torch.cat([context.expand(len(soft), -1, -1),
                                 self.backbone.prompt_embeds(soft)], dim=1)
        mask = torch.ones(context.shape[:2], dtype=torch.long, device=context.device)
        return model(inputs_embeds=context, attention_mask=mask,
                     output_hidden_states=True).hidden_states

    def ratios(self, soft: torch.Tensor) -> torch.Tensor:
        """``(U, K, layers)``: each soft position's hidden norm over the context's median."""
        n = self.ids.shape[1]
        hidden = self._hidden(soft)[self.layers]
        norms = torch.stack([h[:, n:].float().norm(dim=-1) for h in hidden], dim=-1)
        return norms / self.reference.to(norms.device)

    def __call__(self, soft: torch.Tensor) -> torch.Tensor:
        ratio = self.ratios(soft)
        excess = torch.relu(torch.log(ratio / self.margin))
        # summed over the soft tokens, not averaged: one sink among K ordinary tokens
        # counts in full (averaged, a sink at the limit cost 0.02 against InfoNCE's 2.7)
        penalty = self.weight * excess.pow(2).mean(dim=(0, 2)).sum()
        self.last = {"sink_penalty": float(penalty.detach()),
                     "sink_ratio": float(ratio.detach().max())}
        return penalty


@torch.no_grad()
def shortened_step(step: Callable[[], None], params: Sequence[torch.Tensor],
                   ratio: Callable[[], float], limit: float, halvings: int = 8) -> int:
    """Take ``step()`` (the optimizer's), then halve it while ``ratio()`` exceeds
    ``limit``; after ``halvings`` halvings the parameters go back to where they were.
    Returns how many halvings were needed (``halvings + 1``: the step was dropped).

    Example::

        shortened_step(optimizer.step, params, lambda: guard_ratio(), limit=4.0)
    """
    before = [p.detach().clone() for p in params]
    step()
    for done in range(halvings):
        if ratio() <= limit:
            return done
        for p, old in zip(params, before, strict=True):
            p.lerp_(old, 0.5)
    if ratio() <= limit:
        return halvings
    for p, old in zip(params, before, strict=True):
        p.copy_(old)
    return halvings + 1
