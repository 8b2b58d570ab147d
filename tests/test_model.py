"""The embedder itself: encode conventions, soft-prompt caching, relaxed generation."""

import numpy as np
import pytest
import torch

from pe_core.errors import ConfigError
from pe_core.model.config import EmbedderConfig
from pe_core.testing.tiny import tiny_embedder

INSTR = "Retrieve a passage that answers the question"


@pytest.fixture(scope="module")
def model(llama_spec):
    return tiny_embedder(llama_spec)


def test_encode_returns_input_order_and_unit_norm(model):
    texts = ["a", "a much longer text than the others, by far", "mid length text", "b"]
    together = model.encode(texts, instruction=INSTR, batch_size=2)
    alone = np.stack([model.encode(t, instruction=INSTR) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_encode_empty_list_gives_empty_array(model):
    out = model.encode([], instruction=INSTR)
    assert out.shape == (0, model.dim)
    assert model.encode([], convert_to="torch").shape == (0, model.dim)


def test_convert_to_torch_and_unnormalised(model):
    out = model.encode(["x y"], convert_to="torch", normalize=False)
    assert isinstance(out, torch.Tensor) and out.shape == (1, model.dim)
    assert not torch.allclose(out.norm(dim=-1), torch.ones(1))
    with pytest.raises(ValueError):
        model.encode(["x"], convert_to="list")


def test_truncation_warns_once(model):
    long = " ".join(["word"] * 200)
    with pytest.warns(UserWarning, match="truncated") as record:
        out = model.encode([long, long, "short"], max_length=16)
    assert len([w for w in record if "truncated" in str(w.message)]) == 1
    assert out.shape == (3, model.dim)


def test_soft_prompt_computed_once_per_instruction(model, monkeypatch):
    model.clear_prompt_cache()
    calls = []
    real = model.prompting.distributions
    monkeypatch.setattr(
        model.prompting, "distributions", lambda *a, **k: calls.append(a) or real(*a, **k)
    )
    for _ in range(3):
        model.encode(["one", "two", "three"], instruction=INSTR, batch_size=1)
    assert len(calls) == 1
    model.train()  # training invalidates the cache
    model.eval()
    model.encode(["one"], instruction=INSTR)
    assert len(calls) == 2


def test_instruction_changes_embedding(model):
    a = model.encode(["hello world"], instruction=INSTR)
    b = model.encode(["hello world"], instruction="Classify the sentiment of the review")
    assert not np.allclose(a, b)


def test_relaxed_generation_shapes_noise_and_straight_through(model):
    p = model.prompting
    pi = p.distributions([INSTR, "other"], num_tokens=3)
    assert pi.shape == (2, 3, p.embedding_table.shape[0])
    torch.testing.assert_close(pi.sum(-1), torch.ones(2, 3))
    noisy1 = p.distributions([INSTR], 3, noise_seed=7)
    noisy2 = p.distributions([INSTR], 3, noise_seed=7)
    torch.testing.assert_close(noisy1, noisy2)
    assert not torch.allclose(noisy1, pi[:1])
    hard = p.distributions([INSTR], 3, hard=True, noise_seed=7)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    soft, _ = p([INSTR], 3, tau=0.5)
    assert soft.shape == (1, 3, p.d)


def test_low_temperature_approaches_argmax(model):
    p = model.prompting
    cold = p.distributions([INSTR], 2, tau=1e-3)
    assert torch.allclose(cold.max(-1).values, torch.ones(1, 2), atol=1e-3)


@pytest.mark.parametrize("bad", [0, -1])
def test_k_below_one_is_rejected(bad, llama_spec):
    with pytest.raises(ConfigError, match="K"):
        EmbedderConfig(backbone="llama", d_P=8, d_B=8, num_soft_tokens=bad)
    with pytest.raises(ConfigError, match="K"):
        tiny_embedder(llama_spec).prompting.distributions(["x"], num_tokens=bad)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError):
        EmbedderConfig(backbone="llama", d_P=8, d_B=8, placement="middle")
    with pytest.raises(ConfigError):
        EmbedderConfig(backbone="llama", d_P=8, d_B=8, pooling="max")
    with pytest.raises(ConfigError):
        EmbedderConfig.from_dict({"backbone": "llama", "d_P": 8, "d_B": 8, "colour": "red"})


def test_least_squares_alignment_recovers_a_linear_map():
    from pe_core.model.alignment import Alignment

    torch.manual_seed(0)
    e_p = torch.randn(300, 12)
    true = torch.randn(12, 20)
    e_b = e_p @ true
    vocab_p = {f"t{i}": i for i in range(300)}
    vocab_b = {f"t{i}": (i * 7) % 300 for i in range(300)}  # same tokens, other ids
    e_b = e_b[[(i * 7) % 300 for i in range(300)]].clone()
    e_b[[(i * 7) % 300 for i in range(300)]] = e_p @ true
    a = Alignment.least_squares(e_p, e_b, vocab_p, vocab_b, ridge=1e-8)
    torch.testing.assert_close(a.weight, true, atol=1e-3, rtol=1e-3)
