"""The Prompting LLM and its relaxed (Gumbel-softmax) K-step generation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pe_core.errors import ConfigError
from pe_core.model.config import DEFAULT_TEMPLATE
from pe_core.model.encoder import max_positions
from pe_core.model.layout import positions
from pe_core.plugins.backbones import default_soft_prompt_hook


def gumbel_noise(shape: Sequence[int], seed: int, device: Any) -> torch.Tensor:
    """Gumbel(0, 1) noise from a private generator, so a seed replays it exactly."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    u = torch.rand(tuple(shape), generator=gen).clamp_(1e-10, 1.0 - 1e-7)
    return (-torch.log(-torch.log(u))).to(device)


class PromptingLLM(nn.Module):
    """A causal LM that generates K soft tokens for an instruction.

    At step ``t`` the relaxed distribution is ``pi_t = softmax((z_t + g_t) / tau)``;
    the soft token ``s_t = pi_t @ E_P`` is fed back as the next input embedding over the
    KV cache, so gradients reach every step. ``hard=True`` is straight-through (one-hot
    forward, soft gradient).

    Example::

        p = PromptingLLM(AutoModelForCausalLM.from_pretrained(path), tokenizer)
        soft, pi = p(["Retrieve a passage that answers the question"], num_tokens=5)
    """

    def __init__(self, model: Any, tokenizer: Any, template: str = DEFAULT_TEMPLATE) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def embedding_table(self) -> torch.Tensor:
        """``E_P``: the token-embedding matrix, ``(V_P, d_P)``."""
        return self.model.get_input_embeddings().weight

    @property
    def d(self) -> int:
        return int(self.embedding_table.shape[1])

    def _logits_width(self, logits: torch.Tensor) -> torch.Tensor:
        # some heads pad the vocabulary past the embedding table; drop the padding
        return logits[..., : self.embedding_table.shape[0]]

    def distributions(
        self,
        instructions: Sequence[str],
        num_tokens: int,
        tau: float = 1.0,
        hard: bool = False,
        noise_seed: int | None = None,
    ) -> torch.Tensor:
        """Relaxed token distributions ``pi``, shape ``(B, K, V_P)``.

        ``noise_seed`` adds Gumbel noise drawn from that seed (training); ``None`` means
        no noise (inference). The same seed reproduces the same noise, which is what
        cached-gradient training replays.
        """
        if num_tokens < 1:
            raise ConfigError(f"num_tokens (K) must be >= 1, got {num_tokens}")
        if tau <= 0:
            raise ConfigError(f"Gumbel temperature tau must be > 0, got {tau}")
        device = self.embedding_table.device
        prompts = [self.template.format(instruction=i) for i in instructions]
        self.tokenizer.padding_side = "left"
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(device)
        mask = enc["attention_mask"]
        self._check_length(int(mask.shape[1]), num_tokens)
        out = self.model(
            input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions(mask),
            use_cache=True,
        )
        table = self.embedding_table
        batch, vocab = len(prompts), table.shape[0]
        noise = (
            gumbel_noise((batch, num_tokens, vocab), noise_seed, device)
            if noise_seed is not None
            else None
        )
        logits, cache, steps = out.logits[:, -1], out.past_key_values, []
        for t in range(num_tokens):
            z = self._logits_width(logits).float()
            if noise is not None:
                z = z + noise[:, t]
            pi = torch.softmax(z / tau, dim=-1)
            if hard:
                one_hot = torch.zeros_like(pi).scatter_(-1, pi.argmax(-1, keepdim=True), 1.0)
                pi = one_hot - pi.detach() + pi
            steps.append(pi)
            if t == num_tokens - 1:
                break
            soft = (pi.to(table.dtype) @ table)[:, None]
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            out = self.model(
                inputs_embeds=default_soft_prompt_hook(self.model, soft),
                attention_mask=mask,
                position_ids=positions(mask)[:, -1:],  # after the template's real tokens
                past_key_values=cache,
                use_cache=True,
            )
            logits, cache = out.logits[:, -1], out.past_key_values
        return torch.stack(steps, dim=1)

    def _check_length(self, prompt_tokens: int, num_tokens: int) -> None:
        # past its positions the Prompting LLM would run for minutes on a long
        # instruction and read it wrongly, without a word
        positions = max_positions(self.model)
        if positions is not None and prompt_tokens + num_tokens > positions:
            # name the way out that exists: with K at or past the positions, no
            # instruction can be short enough
            fixes = [f"use at most {positions - prompt_tokens} soft tokens"
                     ] if positions > prompt_tokens else []
            if positions > num_tokens:
                fixes.insert(0, f"shorten the instruction to {positions - num_tokens} tokens "
                                "with its template")
            raise ConfigError(
                f"the instruction is {prompt_tokens} tokens with its template and "
                f"num_soft_tokens is {num_tokens}: together more than the Prompting LLM's "
                f"{positions} positions; {' or '.join(fixes) or 'use fewer soft tokens'}"
            )

    def soft_tokens(self, pi: torch.Tensor) -> torch.Tensor:
        """``s = pi @ E_P``, shape ``(B, K, d_P)``."""
        table = self.embedding_table
        return pi.to(table.dtype) @ table

    def forward(
        self,
        instructions: Sequence[str],
        num_tokens: int,
        tau: float = 1.0,
        hard: bool = False,
        noise_seed: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pi = self.distributions(instructions, num_tokens, tau, hard, noise_seed)
        return self.soft_tokens(pi), pi
