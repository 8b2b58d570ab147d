"""The sink guard on real weights: each checkpoint has a token that is an attention sink
wherever it stands (SmolLM2's ``<|endoftext|>``, Gemma 3's ``<bos>``: hidden norms 37-103x
ordinary text's); placed as a soft token after the guard's context, it must be flagged and
penalised, and ordinary words must cost nothing. A guard with a wrong reference (the
model's own first-token sink in it, the final norm's output, a wrong embedding scale)
would miss one side or the other."""

from __future__ import annotations

import warnings

import pytest
import torch

SINKS = {"pe-real:smollm2-135m": ("llama", "<|endoftext|>"),
         "pe-real:gemma3-270m": ("gemma", "<bos>")}
WORDS = ["house", "river", "green", "quickly", "seven"]


@pytest.fixture(scope="module", params=sorted(SINKS))
def loaded(request):
    import pe_core

    backbone, sink = SINKS[request.param]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = pe_core.load(backbone=backbone, model=request.param, device="cpu",
                             allow_untrained=True)
    return model, sink


def test_a_real_sink_token_is_flagged_and_ordinary_words_are_not(loaded):
    from pe_core.training.sink_guard import SinkGuard

    model, sink = loaded
    guard = SinkGuard(model.backbone, model.tokenizer, weight=1.0)
    table = model.backbone.embedding_table.detach()
    tok = model.tokenizer
    words = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in WORDS]
    with torch.no_grad():
        ordinary = guard(table[words][None])
        assert ordinary.item() == 0.0, guard.last
        assert guard.last["sink_ratio"] < guard.margin
        flagged = guard(table[[words[0], tok.convert_tokens_to_ids(sink)]][None])
    assert flagged.item() > 0
    assert guard.last["sink_ratio"] > 5 * guard.margin  # measured: 37x (Gemma), 103x
