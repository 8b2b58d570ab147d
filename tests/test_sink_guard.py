"""The sink guard: a penalty on soft tokens whose hidden norm grows far past ordinary
text's, zero for ordinary ones, in the step's gradient on both step paths, and logged."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from training_helpers import pair_records, tiny_examples, tiny_method, write_jsonl

from pe_core.training.methods import StepInfo

pytestmark = pytest.mark.usefixtures("one_thread")


def _guard(llama_spec, **kw):
    from pe_core.testing.tiny import tiny_embedder
    from pe_core.training.sink_guard import SinkGuard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embedder = tiny_embedder(llama_spec)
    return embedder, SinkGuard(embedder.backbone, embedder.tokenizer, weight=1.0, **kw)


def test_ordinary_tokens_cost_nothing_and_a_blown_up_one_is_pushed_back(llama_spec):
    embedder, guard = _guard(llama_spec)
    table = embedder.backbone.embedding_table.detach()
    ordinary = table[[5, 9, 13, 17, 21]][None].clone()  # real token rows
    assert guard(ordinary).item() == 0.0
    assert guard.last["sink_penalty"] == 0.0 and 0 < guard.last["sink_ratio"] < guard.margin

    sink = ordinary.clone()
    sink[0, 2] *= 200  # one position far past any text token
    sink.requires_grad_(True)
    penalty = guard(sink)
    assert penalty.item() > 0 and guard.last["sink_ratio"] > guard.margin
    penalty.backward()
    grad = sink.grad[0]
    assert grad[2].norm() > 0
    # descending the penalty shrinks the blown-up position (and only it is pushed)
    assert torch.dot(grad[2], sink.detach()[0, 2]) > 0
    assert grad[[0, 1, 3, 4]].abs().max() < grad[2].abs().max()


def test_guard_rejects_a_meaningless_weight(llama_spec):
    from pe_core.training.sink_guard import SinkGuard

    embedder, _ = _guard(llama_spec)
    with pytest.raises(ValueError, match="> 0"):
        SinkGuard(embedder.backbone, embedder.tokenizer, weight=0.0)


@pytest.mark.parametrize("placement", ["suffix", "prefix"])
def test_penalty_enters_both_step_paths_alike(llama_spec, placement):
    """With the guard firing (margin below every ratio), the plain and the GradCache step
    give the same gradients, and they differ from the guard-free step's."""
    from pe_core.training.gradcache import contrastive_step

    grads = {}
    for name, chunk, weight in (("plain", 0, 5.0), ("cached", 4, 5.0), ("off", 0, 0.0)):
        method = tiny_method(llama_spec, placement, sink_guard=weight)
        if method.sink_guard is not None:
            method.sink_guard.margin = 1e-3  # every soft position counts as a sink
        rows = method.rows(tiny_examples(6), 1)
        contrastive_step(method, rows, StepInfo(0), 0.05, chunk)
        grads[name] = {n: p.grad.clone() for n, p in method.named_trainable().items()}
        if weight:
            assert method.step_stats()["sink_penalty"] > 0
        else:
            assert method.sink_guard is None and method.step_stats() == {}
    for n, g in grads["plain"].items():
        scale = g.abs().max().clamp(min=1e-12)
        assert ((g - grads["cached"][n]).abs().max() / scale) < 1e-4, n
    weight = "alignment.weight"
    assert not torch.allclose(grads["plain"][weight], grads["off"][weight])


def test_guard_is_off_by_default():
    from pe_core.training.settings import TrainSettings

    assert TrainSettings().sink_guard == 0.0


def test_training_log_records_the_guard(tmp_path, tiny_folders):
    import pe_core

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_records(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pe_core.train(data, backbone="llama", model=str(tiny_folders["model"]),
                      prompting=str(tiny_folders["prompting"]), out=tmp_path / "run",
                      steps=2, batch_size=4, device="cpu", progress=False, sink_guard=1.0)
    steps = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    assert len(steps) == 2
    assert all(s["sink_penalty"] >= 0 and s["sink_ratio"] > 0 and s["sink_halvings"] >= 0
               for s in steps)


def test_a_step_into_a_sink_is_halved_until_it_is_not_and_dropped_when_it_always_is():
    from pe_core.training.sink_guard import shortened_step

    p = torch.zeros(3)

    def step(to: float):
        def go():
            p.fill_(to)
        return go

    def ratio():
        return float(p.abs().max())

    assert shortened_step(step(0.5), [p], ratio, limit=1.0) == 0 and p[0] == 0.5
    p.zero_()
    assert shortened_step(step(3.2), [p], ratio, limit=1.0) == 2  # 3.2 -> 1.6 -> 0.8
    assert p[0].item() == pytest.approx(0.8)
    p.zero_()
    assert shortened_step(step(1e9), [p], ratio, limit=1.0, halvings=3) == 4
    assert p.abs().max() == 0  # dropped: back where it was


def test_a_negative_guard_weight_is_a_config_error(tmp_path):
    from pe_core.errors import ConfigError
    from pe_core.training.settings import TrainSettings

    with pytest.raises(ConfigError, match="sink_guard"):
        TrainSettings(sink_guard=-1.0)


def test_the_sink_reading_script_sees_a_blown_up_soft_token(tmp_path, tiny_folders,
                                                            monkeypatch):
    """benchmarks/sinks.py on a trained tiny run, and on the same run with its alignment
    scaled up 300x: the second reading's worst soft token is far past the first's."""
    import shutil
    from pathlib import Path

    import pe_core
    from pe_core.safe_io import load_tensors, save_tensors

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from benchmarks import sinks

    data = write_jsonl(tmp_path / "pairs.jsonl", pair_records(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pe_core.train(data, backbone="llama", model=str(tiny_folders["model"]),
                      prompting=str(tiny_folders["prompting"]), out=tmp_path / "run",
                      steps=1, batch_size=4, device="cpu", progress=False)
    shutil.copytree(tmp_path / "run", tmp_path / "blown")
    path = tmp_path / "blown" / "alignment.safetensors"
    tensors, meta = load_tensors(path)
    save_tensors({"weight": tensors["weight"] * 300}, path, meta)
    texts = [r["positive"] for r in pair_records(4)]
    plain = sinks.read_run(tmp_path / "run", texts)
    blown = sinks.read_run(tmp_path / "blown", texts)
    assert len(plain["per_text"]) == 4 and len(plain["per_text"][0]["soft"]) == 5
    assert blown["worst_soft_over_text_median"] > 20 * plain["worst_soft_over_text_median"]
