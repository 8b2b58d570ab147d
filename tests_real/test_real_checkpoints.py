"""What no tiny model can show: the real checkpoints load with their trained weights and
their GGUF tokenizers segment words as the models were trained to read them (a wrong
tokenizer or random weights would still embed, silently)."""

from __future__ import annotations

import math

import pytest
import torch

SENTENCE = "The quick brown fox"
ENGLISH = ("The history of the city goes back to the Roman period, when a small settlement "
           "was founded on the river. Over the following centuries it grew into an important "
           "trading town, and its market drew merchants from across the region.")
PIECES = {
    "pe-real:smollm2-135m": ["The", "Ġquick", "Ġbrown", "Ġfox"],  # no BOS: the file says so
    "pe-real:gemma3-270m": ["<bos>", "The", "▁quick", "▁brown", "▁fox"],
}


@pytest.fixture(scope="module", params=sorted(PIECES))
def real(request):
    from transformers import AutoTokenizer

    from pe_core.checkpoints.verified import load_causal_lm
    from pe_core.model_refs import resolve_model

    folder = resolve_model(request.param)
    return request.param, folder, AutoTokenizer.from_pretrained(folder), load_causal_lm(folder)


def test_reference_sentence_pieces_and_round_trip(real):
    ref, _, tok, _ = real
    ids = tok(SENTENCE)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == PIECES[ref]
    assert tok.decode(ids, skip_special_tokens=True) == SENTENCE


def test_plain_english_perplexity(real):
    """With the right tokenizer and weights these models read plain English at a
    perplexity near 10; Gemma 3 through transformers' own (Unigram) GGUF tokenizer: 239."""
    _, _, tok, model = real
    enc = tok(ENGLISH, return_tensors="pt")
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss
    assert math.exp(loss.item()) < 25


def test_backbone_holds_the_checkpoints_weights(real):
    from safetensors import safe_open

    from pe_core.loading import load_backbone
    from pe_core.plugins import get_backbone

    ref, folder, _, _ = real
    backbone = load_backbone(get_backbone("gemma" if "gemma" in ref else "llama"), folder)
    params = dict(backbone.named_parameters())
    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        names = [k for k in fh.keys() if k.startswith("model.")]  # noqa: SIM118
        assert len(names) == len(params)
        for name in names:
            assert torch.equal(params[name.removeprefix("model.")].detach(),
                               fh.get_tensor(name)), name
