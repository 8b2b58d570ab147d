"""Training (issue #3): data, loss, what trains, GradCache, checkpoints and resume,
divergence, transfer, the LoRA baseline, CLI and plot. Tiny models, tiny data."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import INSTRUCTIONS, pair_records, tiny_examples, tiny_method, write_jsonl

import pe_core
from pe_core.errors import ConfigError, DataError, TrainingDivergedError
from pe_core.training.data import Example, TaskBatches, read_pairs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", pair_records())


@pytest.fixture(scope="module")
def qwen_folders(tmp_path_factory):
    from pe_core.plugins import get_backbone
    from pe_core.testing.tiny import save_tiny_folders

    return save_tiny_folders(get_backbone("qwen"), tmp_path_factory.mktemp("qwen"))


def _train(pairs, folders, out, **kw):
    opts = dict(steps=4, batch_size=8, lr=1e-3, progress=False, save_every=2)
    opts.update(kw)
    return pe_core.train(str(pairs), backbone="llama", model=str(folders["model"]),
                         prompting=str(folders["prompting"]), out=out, **opts)


# -- data -----------------------------------------------------------------------------
def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        read_pairs(path)


@pytest.mark.parametrize("record, message", [
    ({"query": "q"}, "no 'positive'"),
    ({"positive": "p"}, "no 'query'"),
    ({"query": 3, "positive": "p"}, "'query' must be a string"),
    ({"query": "q", "positive": "p", "negatives": "n"}, "list of strings"),
    ({"query": "q", "positive": "p", "negatives": [1]}, "list of strings"),
    ({"query": "q", "positive": "p", "instruction": 5}, "'instruction' must be a string"),
    ({"query": "q", "positive": "  "}, "empty string"),
    (["q", "p"], "JSON object"),
])
def test_bad_records_name_file_line_and_field(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"query": "a", "positive": "b"}, record])
    with pytest.raises(DataError, match=message) as info:
        read_pairs(path)
    assert f"{path}:2" in str(info.value)


def test_invalid_json_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\n{"query": \n')
    with pytest.raises(DataError, match=":2: not valid JSON"):
        read_pairs(path)


def test_each_batch_is_drawn_from_one_task(pairs):
    data = read_pairs(pairs)
    assert sorted(data.tasks()) == sorted(INSTRUCTIONS)
    batches = TaskBatches(data, batch_size=8, seed=3)
    for epoch in range(3):
        for batch in batches.epoch(epoch):
            assert len({data.examples[i].task for i in batch}) == 1
    assert batches.epoch(1) == TaskBatches(data, 8, seed=3).epoch(1)  # replayable
    assert batches.epoch(1) != batches.epoch(2)


def test_task_field_and_mixed_instruction_presence(tmp_path):
    rows = [{"query": "a b", "positive": "c d", "task": "t"},
            {"query": "e f", "positive": "g h", "task": "t", "instruction": "x"}]
    with pytest.raises(DataError, match="mixes records"):
        read_pairs(rows)


def test_datasets_dataset_and_hash(pairs):
    datasets = pytest.importorskip("datasets")
    rows = pair_records()
    from_ds = read_pairs(datasets.Dataset.from_list(rows))
    from_list = read_pairs(rows)
    assert len(from_ds) == len(rows) and from_ds.examples == from_list.examples
    assert from_ds.data_hash == from_list.data_hash
    import hashlib

    assert read_pairs(pairs).data_hash == hashlib.sha256(pairs.read_bytes()).hexdigest()
    with pytest.raises(DataError, match="no training records"):
        read_pairs([])


# -- loss -------------------------------------------------------------------------------
def test_info_nce_uses_in_batch_and_hard_negatives():
    from pe_core.training.loss import contrastive_loss, info_nce

    g = torch.Generator().manual_seed(0)
    q, pos, neg = (torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
                   for _ in range(3))
    loss = contrastive_loss(q, pos, neg, 0.05)
    scores = q @ torch.cat([pos, neg]).T / 0.05
    manual = -(scores.diagonal() - scores.logsumexp(-1)).mean()
    torch.testing.assert_close(loss, manual)
    assert info_nce(q, pos, torch.arange(4), 0.05) < loss  # hard negatives make it harder
    # a duplicate of a query's positive elsewhere in the batch is not its negative
    docs = torch.cat([pos, pos[:1]])
    keys = torch.tensor([10, 11, 12, 13, 10])
    label = torch.tensor([0])
    masked = info_nce(q[:1], docs, label, 0.05, keys)
    torch.testing.assert_close(masked, info_nce(q[:1], pos, label, 0.05))
    assert info_nce(q[:1], docs, label, 0.05) > masked


def test_default_temperature_in_range():
    from pe_core.training.settings import TrainSettings

    assert 0.02 <= TrainSettings().temperature <= 0.05
    with pytest.raises(ConfigError):
        TrainSettings(temperature=0)
    with pytest.raises(ConfigError, match="unknown training option"):
        pe_core.train("x.jsonl", backbone="llama", bogus=1)


def test_alignment_lr_default_depends_on_method():
    from pe_core.training.settings import TrainSettings

    assert TrainSettings().alignment_lr == 1e-2
    assert TrainSettings(method="align").alignment_lr == 3e-3
    assert TrainSettings(method="align", alignment_lr=5e-2).alignment_lr == 5e-2
    with pytest.raises(ConfigError, match="alignment_lr"):
        TrainSettings(alignment_lr=0)


def test_instruction_on_query_side_document_side_setting(llama_spec):
    method = tiny_method(llama_spec)
    rows = method.rows(tiny_examples(3), 1)
    doc = method.config.document_instruction
    assert rows.instructions == [INSTRUCTIONS[0], doc]
    assert rows.prompt == [0, 0, 0] + [1] * 6  # 3 queries, 3 positives, 3 negatives
    method.config.document_instruction = None  # documents without a soft prompt
    rows = method.rows(tiny_examples(3), 1)
    assert rows.instructions == [INSTRUCTIONS[0]] and rows.prompt == [0, 0, 0] + [-1] * 6


# -- what trains ----------------------------------------------------------------------
def test_backbone_frozen_no_grad_no_optimizer_state(pairs, tiny_folders, tmp_path):
    from safetensors.torch import load_file

    result = _train(pairs, tiny_folders, tmp_path / "run", steps=2)
    model = result.model
    assert all(not p.requires_grad and p.grad is None for p in model.backbone.parameters())
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    names = set(load_file(ckpt / "trainable.safetensors"))
    opt_names = {k.split("::")[0] for k in load_file(ckpt / "optimizer.safetensors")}
    assert "alignment.weight" in names and any(n.startswith("prompting.") for n in names)
    assert opt_names == names  # only trainable parameters carry optimizer state
    assert not any("backbone" in n for n in names)
    original = load_file(Path(tiny_folders["model"]) / "model.safetensors")
    for name, p in model.backbone.model.named_parameters():
        torch.testing.assert_close(p.detach(), original[name], rtol=0, atol=0)
    # every checkpoint file is safetensors or JSON: nothing is pickled
    assert {f.suffix for f in ckpt.iterdir()} == {".safetensors", ".json"}


def test_prompting_lora_trains_adapter_and_saves_plain_folder(pairs, tiny_folders, tmp_path):
    result = _train(pairs, tiny_folders, tmp_path / "run", steps=2, prompting_lora=4)
    out = tmp_path / "run"
    assert (out / "prompting" / "config.json").is_file()
    assert not (out / "prompting" / "adapter_config.json").exists()
    again = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                         alignment=str(out), device="cpu")
    a = result.model.encode(["alpha beta"], instruction=INSTRUCTIONS[0])
    np.testing.assert_allclose(again.encode(["alpha beta"], instruction=INSTRUCTIONS[0]), a,
                               atol=1e-5)


def test_gumbel_annealing_and_straight_through(pairs, tiny_folders, tmp_path):
    _train(pairs, tiny_folders, tmp_path / "run", steps=3, gumbel_tau_start=2.0,
           gumbel_tau_end=0.5, straight_through=True)
    taus = [r["tau"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").open())
            if "tau" in r]
    assert taus[0] == pytest.approx(2.0) and taus[0] > taus[1] > taus[2] >= 0.5


@pytest.mark.parametrize("noise", [None, True, False])
def test_gumbel_noise_reaches_the_prompting_llm_only_when_asked(pairs, tiny_folders, tmp_path,
                                                                monkeypatch, noise):
    """Off by default: training draws the noise-free soft prompt that inference uses."""
    from pe_core.model.prompting import PromptingLLM

    seen: list = []
    plain = PromptingLLM.distributions

    def spy(self, instructions, num_tokens, tau=1.0, hard=False, noise_seed=None):
        seen.append(noise_seed)
        return plain(self, instructions, num_tokens, tau, hard, noise_seed)

    monkeypatch.setattr(PromptingLLM, "distributions", spy)
    kw = {} if noise is None else {"gumbel_noise": noise}
    _train(pairs, tiny_folders, tmp_path / "run", steps=2, eval_every=0, **kw)
    training = [s for s in seen if s is not None]
    if noise:
        assert len(set(training)) == 2  # one seed per step, a function of (seed, step)
    else:
        assert seen and not training
    recorded = json.loads((tmp_path / "run" / "train_settings.json").read_text())
    assert recorded["gumbel_noise"] is bool(noise)


# -- GradCache --------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["suffix", "prefix"])
def test_grad_cache_equals_uncached_gradient(llama_spec, placement):
    """Gumbel noise on (tau < 1, a seed): the chunked step reproduces the plain step."""
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.methods import StepInfo

    results = []
    for chunk in (0, 5):
        method = tiny_method(llama_spec, placement)
        rows = method.rows(tiny_examples(6), 1)
        loss = contrastive_step(method, rows, StepInfo(0, tau=0.7, noise_seed=11), 0.05, chunk)
        grads = {n: p.grad.clone() for n, p in method.named_trainable().items()}
        results.append((loss, grads))
        assert all(p.grad is None for p in method.backbone.parameters())
    (loss0, g0), (loss1, g1) = results
    assert loss0 == pytest.approx(loss1, rel=1e-5)
    for name in g0:
        scale = g0[name].abs().max().clamp(min=1e-12)
        assert ((g0[name] - g1[name]).abs().max() / scale) < 1e-4, name


def test_lora_baseline_length_groups_keep_row_order(tiny_folders):
    """The LoRA baseline runs rows in groups of similar length; each row's embedding is
    the one it gets alone, in the order asked for."""
    from pe_core.plugins import get_backbone
    from pe_core.training.lora_baseline import LoraMethod, build_lora_embedder
    from pe_core.training.settings import TrainSettings

    s = TrainSettings(method="lora", lora_dropout=0.0)
    method = LoraMethod(build_lora_embedder(get_backbone("llama"), Path(tiny_folders["model"]),
                                            s), s)
    rows = method.rows(tiny_examples(6), 1)
    assert len({len(x) for x in rows.ids}) > 2  # queries and documents of several lengths
    index = [5, 0, 13, 7, 2, 16, 9]
    with torch.no_grad():
        together = method.encode(rows, index, None)
        alone = torch.cat([method.encode(rows, [r], None) for r in index])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_grad_cache_lora_baseline(tiny_folders):
    from pe_core.plugins import get_backbone
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.lora_baseline import LoraMethod, build_lora_embedder
    from pe_core.training.methods import StepInfo
    from pe_core.training.settings import TrainSettings

    grads = []
    for chunk in (0, 4):
        torch.manual_seed(0)
        s = TrainSettings(method="lora", lora_dropout=0.0)
        emb = build_lora_embedder(get_backbone("llama"), Path(tiny_folders["model"]), s)
        method = LoraMethod(emb, s)
        rows = method.rows(tiny_examples(5), 1)
        contrastive_step(method, rows, StepInfo(0), 0.05, chunk)
        grads.append({n: p.grad.clone() for n, p in method.named_trainable().items()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4)


def _suffix_inputs(method):
    """Three texts of different lengths, padded, and a random soft prompt per row."""
    enc = method.embedder.tokenizer(
        ["alpha beta gamma", "fox", "open a file and read the list of values"],
        return_tensors="pt", padding=True,
    )
    backbone = method.backbone
    soft = torch.randn(3, 5, backbone.d) * backbone.embedding_table.std()
    return enc["input_ids"], enc["attention_mask"], soft


def test_suffix_fast_path_is_exact(llama_spec):
    """Early exit after the last layer's keys/values, and the store across epochs, give
    what the encoder's own suffix path gives."""
    from pe_core.training.kvcache import TextKVStore, soft_pass, text_cache

    method = tiny_method(llama_spec)
    backbone = method.backbone
    ids, mask, soft = _suffix_inputs(method)
    ref = backbone(ids, mask, soft, "suffix", "last")
    fast = soft_pass(backbone, text_cache(backbone, ids, mask), mask, soft)
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
    store = TextKVStore(1 << 26)
    soft_pass(backbone, store.cache(backbone, ids[:2], mask[:2]), mask[:2], soft[:2])
    again = soft_pass(backbone, store.cache(backbone, ids, mask), mask, soft)
    assert (store.hits, store.misses, len(store)) == (2, 3, 3)
    torch.testing.assert_close(again, ref, atol=1e-5, rtol=0)
    # free calls: every length its own group, each padded to its own width
    grouped = TextKVStore(1 << 26, call_cost=0)
    torch.testing.assert_close(
        soft_pass(backbone, grouped.cache(backbone, ids, mask), mask, soft), ref,
        atol=1e-5, rtol=0,
    )


def test_bf16_text_pass_hands_back_fp32_keys_close_to_the_exact_pass(llama_spec):
    """``text_pass_bf16``: the frozen text pass runs under bf16 autocast (its keys/values
    do differ from fp32's), comes back in fp32 and stays within bf16's rounding of the
    exact suffix path, through the store and the method alike."""
    from pe_core.training.kvcache import TextKVStore, soft_pass, text_cache
    from pe_core.training.methods import StepInfo

    method = tiny_method(llama_spec, text_kv_cache_mb=0.0)
    backbone = method.backbone
    ids, mask, soft = _suffix_inputs(method)
    exact, cheap = text_cache(backbone, ids, mask), text_cache(backbone, ids, mask, bf16=True)
    gaps = []
    for a, b in zip(cheap.layers, exact.layers, strict=True):
        assert a.keys.dtype == a.values.dtype == b.keys.dtype == torch.float32
        scale = b.keys.abs().max()
        gaps.append(float((a.keys - b.keys).abs().max() / scale))
    # bf16 keeps 8 significant bits (0.4 % per rounding); two layers of them, with margin
    assert max(gaps) < 5e-2
    assert max(gaps) > 1e-5  # the pass did run in bf16
    ref = backbone(ids, mask, soft, "suffix", "last")
    tol = dict(atol=5e-2 * float(ref.abs().max()), rtol=0)
    torch.testing.assert_close(soft_pass(backbone, cheap, mask, soft), ref, **tol)
    store = TextKVStore(1 << 26, bf16=True)
    torch.testing.assert_close(soft_pass(backbone, store.cache(backbone, ids, mask), mask, soft),
                               ref, **tol)
    assert tiny_method(llama_spec, text_pass_bf16=True).store.bf16 is True
    rows = method.rows(tiny_examples(4), 1)
    head = method.head(rows, StepInfo(0, noise_seed=0)).detach()
    index = list(range(len(rows)))
    fp32 = method.encode(rows, index, head)
    method.settings.text_pass_bf16 = True
    bf16 = method.encode(rows, index, head)
    torch.testing.assert_close(bf16, fp32, atol=5e-2, rtol=0)  # unit vectors
    assert float((bf16 - fp32).abs().max()) > 1e-6


def test_length_groups_are_the_cheapest_split():
    """The dynamic programme finds the cheapest grouping (checked against every split of
    the sorted rows) and returns each row once."""
    import itertools

    from pe_core.model.batching import length_groups

    def cost(groups, lengths, call):
        return sum(call + len(g) * max(lengths[i] for i in g) for g in groups)

    rng = random.Random(0)
    for _ in range(60):
        lengths = [rng.choice([3, 5, 8, 40, 41, 120]) for _ in range(rng.randint(1, 9))]
        call = rng.choice([0, 10, 48, 500])
        groups = length_groups(lengths, call)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(
            cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)), strict=True)],
                 lengths, call)
            for r in range(len(order))
            for cuts in itertools.combinations(range(1, len(order)), r)
        )
        assert cost(groups, lengths, call) == best
    assert length_groups([]) == []
    assert length_groups([120, 12, 118, 15]) == [[1, 3], [2, 0]]


def test_gradient_checkpointing_prefix_same_gradient(llama_spec):
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.methods import StepInfo

    grads = []
    for ckpt in (False, True):
        method = tiny_method(llama_spec, "prefix", gradient_checkpointing=ckpt)
        contrastive_step(method, method.rows(tiny_examples(4), 1), StepInfo(0, noise_seed=1), 0.05)
        grads.append(method.embedder.alignment.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_bf16_autocast_step(pairs, tiny_folders, tmp_path):
    result = _train(pairs, tiny_folders, tmp_path / "run", steps=1, bf16=True)
    assert np.isfinite(result.loss)


@pytest.mark.parametrize("setting", [None, True, False])
def test_deterministic_kernels_inside_the_loop_only(pairs, tiny_folders, tmp_path,
                                                      monkeypatch, setting):
    """On CPU by default; the caller's choice comes back after training."""
    from pe_core.training.trainer import Trainer

    seen: list = []
    plain = Trainer._one_step

    def spy(self, *args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return plain(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_one_step", spy)
    kw = {} if setting is None else {"deterministic": setting}
    assert not torch.are_deterministic_algorithms_enabled()
    _train(pairs, tiny_folders, tmp_path / "run", steps=2, eval_every=0, **kw)
    assert seen == [setting is not False] * 2
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_kernels_default_off_on_cuda_and_restore():
    from pe_core.training.trainer import deterministic_kernels

    with deterministic_kernels(None, torch.device("cuda")):  # no CUDA needed: nothing runs
        assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with deterministic_kernels(False, torch.device("cpu")):
            assert torch.are_deterministic_algorithms_enabled()  # False: left as it was
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


# -- checkpoints, resume, divergence ----------------------------------------------------
def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "log.jsonl").open()) if "loss" in r]


def test_ctrl_c_then_resume_matches_uninterrupted(pairs, tiny_folders, tmp_path):
    full = _train(pairs, tiny_folders, tmp_path / "full", steps=8, save_every=3)

    def press_ctrl_c(step, loss):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _train(pairs, tiny_folders, tmp_path / "cut", steps=8, save_every=3,
               on_step=press_ctrl_c)
    ckpts = tmp_path / "cut" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 4
    assert not (tmp_path / "cut" / "alignment.safetensors").exists()
    with pytest.raises(ConfigError, match="resume"):
        _train(pairs, tiny_folders, tmp_path / "cut", steps=8)
    resumed = _train(pairs, tiny_folders, tmp_path / "cut", steps=8, save_every=3, resume=True)
    np.testing.assert_allclose(_losses(tmp_path / "cut"), _losses(tmp_path / "full"),
                               rtol=1e-5, atol=1e-6)
    assert len(_losses(tmp_path / "cut")) == 8
    a = full.model.encode(["alpha beta"], instruction=INSTRUCTIONS[1])
    b = resumed.model.encode(["alpha beta"], instruction=INSTRUCTIONS[1])
    np.testing.assert_allclose(a, b, atol=1e-5)
    # only the newest checkpoints are kept; no temp folders are left behind
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["latest.json", "step-00000006", "step-00000008"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(pairs, tiny_folders, tmp_path,
                                                         monkeypatch):
    from pe_core.training import trainer

    real = trainer.contrastive_step

    def poisoned(method, rows, info, *args):
        if info.step == 2:  # the third step: a real NaN through the model
            with torch.no_grad():
                method.embedder.alignment.weight.fill_(float("nan"))
        return real(method, rows, info, *args)

    monkeypatch.setattr(trainer, "contrastive_step", poisoned)
    with pytest.raises(TrainingDivergedError, match="step 3") as info:
        _train(pairs, tiny_folders, tmp_path / "run", steps=6, save_every=2)
    assert "step-00000002" in str(info.value)
    ckpts = tmp_path / "run" / "checkpoints"
    assert json.loads((ckpts / "latest.json").read_text())["step"] == 2
    from safetensors.torch import load_file

    good = load_file(ckpts / "step-00000002" / "trainable.safetensors")
    assert all(torch.isfinite(t).all() for t in good.values())
    assert not (tmp_path / "run" / "alignment.safetensors").exists()


def test_checkpoint_latest_pointer_fallback(tmp_path):
    from pe_core.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from pe_core.training.schedule import make_scheduler

    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = make_scheduler(opt, 1, 10)
    p.grad = torch.ones(3)
    opt.step()
    sched.step()
    save_checkpoint(tmp_path, 1, {"p": p}, opt, sched)
    (tmp_path / ".step-00000002.crashed").mkdir()  # an interrupted write
    (tmp_path / "latest.json").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    q = torch.nn.Parameter(torch.zeros(3))
    opt2 = torch.optim.AdamW([q], lr=0.5)
    sched2 = make_scheduler(opt2, 1, 10)
    load_checkpoint(tmp_path / "step-00000001", {"p": q}, opt2, sched2)
    torch.testing.assert_close(q.detach(), p.detach())
    torch.testing.assert_close(opt2.state[q]["exp_avg"], opt.state[p]["exp_avg"])
    assert sched2.get_last_lr() == sched.get_last_lr()


# -- transfer -------------------------------------------------------------------------
def test_align_trains_only_new_alignment_from_least_squares(pairs, tiny_folders, qwen_folders,
                                                            tmp_path):
    from pe_core.model.alignment import Alignment
    from pe_core.training import methods

    _train(pairs, tiny_folders, tmp_path / "src", steps=2)
    calls = []
    real = methods.CachedSoftTokenHead.cache

    def counting(self, instructions):
        before = set(self.soft_tokens)
        real(self, instructions)
        calls.extend(set(self.soft_tokens) - before)

    initial = {}

    def on_step(step, loss):
        initial.setdefault("steps", []).append(step)

    methods.CachedSoftTokenHead.cache = counting
    try:
        result = pe_core.align(
            tmp_path / "src", str(pairs), backbone="qwen", model=str(qwen_folders["model"]),
            out=tmp_path / "qwen", steps=4, batch_size=8, alignment_lr=1e-2, progress=False,
            dev_size=8, eval_every=2, on_step=on_step, init="tokens",
        )
    finally:
        methods.CachedSoftTokenHead.cache = real
    model = result.model
    # each instruction's soft tokens were computed once (two tasks + the document side)
    assert sorted(calls) == sorted({*INSTRUCTIONS, model.config.document_instruction})
    assert all(not p.requires_grad for p in model.prompting.parameters())
    src = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                       alignment=str(tmp_path / "src"), device="cpu")
    for a, b in zip(src.prompting.parameters(), model.prompting.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    out = tmp_path / "qwen"
    cfg = json.loads((out / "pe_config.json").read_text())
    assert cfg["prompting_id"] == str((tmp_path / "src" / "prompting").resolve())
    assert cfg["backbone"] == "qwen" and cfg["training_data_hash"]
    assert not (out / "prompting").exists()
    # the log has the dev score against steps
    scores = [r for r in map(json.loads, (out / "log.jsonl").open()) if "dev_score" in r]
    assert [r["step"] for r in scores] == [0, 2, 4]  # from the least-squares start
    # the alignment started from the token least-squares fit (init="source": test_align_init)
    ls = Alignment.least_squares(model.prompting.embedding_table, model.backbone.embedding_table,
                                 model.prompting.tokenizer, model.tokenizer)
    from safetensors.torch import load_file

    trained = load_file(out / "alignment.safetensors")["weight"]
    assert not torch.equal(trained, ls.weight.detach())
    assert (trained - ls.weight.detach()).norm() < ls.weight.norm()
    # loadable as an ordinary alignment
    loaded = pe_core.load(backbone="qwen", model=str(qwen_folders["model"]), alignment=str(out),
                          device="cpu")
    np.testing.assert_allclose(loaded.encode(["fox"], instruction=INSTRUCTIONS[0]),
                               model.encode(["fox"], instruction=INSTRUCTIONS[0]), atol=1e-5)


def test_soft_norm_tokens_pins_every_soft_token_through_train_load_and_align(
        pairs, tiny_folders, qwen_folders, tmp_path):
    from pe_core.model.alignment import median_token_norm

    def norms(model, instruction=INSTRUCTIONS[0]):
        return model.soft_prompts([instruction])[0].detach().float().norm(dim=-1)

    result = _train(pairs, tiny_folders, tmp_path / "src", steps=3, alignment_lr=1e-1,
                    soft_norm="tokens")
    model = result.model
    target = median_token_norm(model.backbone.embedding_table)
    assert model.config.soft_norm == "tokens"
    torch.testing.assert_close(norms(model), torch.full((5,), target), rtol=1e-5, atol=0)
    # the default leaves the norm to training: a large alignment lr moves it
    free = _train(pairs, tiny_folders, tmp_path / "free", steps=3, alignment_lr=1e-1).model
    assert free.alignment.norm is None
    assert (norms(free) - target).abs().max() > 1e-3 * target
    # saved in pe_config.json and applied again at load (the norm itself is not saved)
    loaded = pe_core.load(backbone="llama", model=str(tiny_folders["model"]),
                          alignment=str(tmp_path / "src"), device="cpu")
    torch.testing.assert_close(norms(loaded), norms(model), rtol=1e-5, atol=0)
    np.testing.assert_allclose(loaded.encode(["fox"], instruction=INSTRUCTIONS[0]),
                               model.encode(["fox"], instruction=INSTRUCTIONS[0]), atol=1e-5)
    # pe align inherits it and pins the carried alignment to the new backbone's median norm
    moved = pe_core.align(tmp_path / "src", str(pairs), backbone="qwen",
                          model=str(qwen_folders["model"]), out=tmp_path / "qwen", steps=2,
                          batch_size=8, progress=False).model
    assert moved.config.soft_norm == "tokens"
    qwen_target = median_token_norm(moved.backbone.embedding_table)
    assert moved.alignment.norm == pytest.approx(qwen_target)  # set on the carried alignment
    torch.testing.assert_close(norms(moved), torch.full((5,), qwen_target), rtol=1e-5, atol=0)
    with pytest.raises(ConfigError, match="soft_norm must be one of"):
        _train(pairs, tiny_folders, tmp_path / "bad", steps=1, soft_norm="unit")
    assert not (tmp_path / "bad").exists()


def test_align_least_squares_initial_weights(llama_spec, tiny_folders):
    from pe_core.loading import assemble
    from pe_core.model.alignment import Alignment
    from pe_core.training.methods import AlignMethod
    from pe_core.training.settings import TrainSettings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        emb = assemble(llama_spec, Path(tiny_folders["model"]), Path(tiny_folders["prompting"]),
                       device="cpu")
    method = AlignMethod(emb, TrainSettings(method="align"))
    ls = Alignment.least_squares(emb.prompting.embedding_table, emb.backbone.embedding_table,
                                 emb.prompting.tokenizer, emb.tokenizer)
    torch.testing.assert_close(method.named_trainable()["alignment.weight"], ls.weight)
    assert list(method.named_trainable()) == ["alignment.weight"]


# -- LoRA baseline ----------------------------------------------------------------------
def test_lora_baseline_recipe_output_and_same_eval(pairs, tiny_folders, tmp_path):
    from pe_core.training.dev_eval import retrieval_scores
    from pe_core.training.lora_baseline import LoraEmbedder

    result = pe_core.train(str(pairs), backbone="llama", model=str(tiny_folders["model"]),
                           out=tmp_path / "lora", method="lora", steps=2, batch_size=8,
                           progress=False, dev_size=8)
    out = tmp_path / "lora"
    assert (out / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 16
    targets = {t.rsplit(".", 1)[-1] for t in adapter["target_modules"]}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= targets
    meta = json.loads((out / "pe_lora_config.json").read_text())
    assert meta["pooling"] == "last" and meta["training_data_hash"]
    model = result.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.format_query("q", "Do it") == "Instruct: Do it\nQuery: q"
    again = LoraEmbedder.load(out, device="cpu")
    texts = ["alpha beta", "fox dog"]
    np.testing.assert_allclose(again.encode(texts, instruction="x"),
                               model.encode(texts, instruction="x"), atol=1e-5)
    dev = read_pairs(pairs).split_dev(8)[1].examples
    assert result.dev == pytest.approx(retrieval_scores(model, dev))


def test_dev_eval_perfect_and_chance():
    from pe_core.training.dev_eval import retrieval_scores

    class Oracle:
        def encode(self, texts, instruction=None, **kw):
            # a query and its positive share the first word; everything else differs
            return np.stack([np.eye(64)[hash(t.split()[0]) % 64] for t in texts])

    examples = [Example(f"w{i} q", f"w{i} doc", (), "x", "x") for i in range(5)]
    scores = retrieval_scores(Oracle(), examples)
    assert scores["recall@1"] == 1.0 and scores["ndcg@10"] == 1.0


# -- CLI and plot -----------------------------------------------------------------------
def test_cli_train_align_plot(pairs, tiny_folders, qwen_folders, tmp_path, capsys):
    from pe_core.cli.main import main

    run = tmp_path / "cli"
    common = ["--data", str(pairs), "--steps", "2", "--batch-size", "8", "--no-progress"]
    assert main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                 "--prompting", str(tiny_folders["prompting"]), "--out", str(run),
                 "--placement", "prefix", "--num-soft-tokens", "3", *common]) == 0
    cfg = json.loads((run / "pe_config.json").read_text())
    assert cfg["placement"] == "prefix" and cfg["num_soft_tokens"] == 3
    assert main(["align", "--from", str(run), "--backbone", "qwen", "--model",
                 str(qwen_folders["model"]), "--out", str(tmp_path / "q"), *common]) == 0
    assert main(["align", "--from", str(run), "--backbone", "qwen", "--model",
                 str(qwen_folders["model"]), "--out", str(tmp_path / "q2"), "--init", "tokens",
                 *common]) == 0
    assert main(["plot", str(run)]) == 0
    png = run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a typed error becomes exit status 2 with a message, not a traceback
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["train", "--backbone", "llama", "--model", str(tiny_folders["model"]),
                 "--out", str(tmp_path / "x"), "--data", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err


def test_plot_without_log_is_typed_error(tmp_path):
    from pe_core.errors import MissingFileError
    from pe_core.training.plot import plot_run

    with pytest.raises(MissingFileError):
        plot_run(tmp_path)


# -- the soft pass's attention ---------------------------------------------------------
def _attention_inputs(q=5, t=12, seed=0, padded=True):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(3, 6, q, 8, generator=gen, requires_grad=True)
    key = torch.randn(3, 2, t, 8, generator=gen, requires_grad=True)
    value = torch.randn(3, 2, t, 8, generator=gen, requires_grad=True)
    allowed = torch.ones(3, 1, q, t, dtype=torch.bool)
    allowed[..., t - q :] = torch.ones(q, q, dtype=torch.bool).tril()
    if padded:
        allowed[0, :, :, :3] = False  # a padded row
    return query, key, value, allowed


def _reference_attention(query, key, value, allowed, scaling, softcap=None):
    """transformers' eager attention, written out: repeat the key/value heads."""
    rep = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(rep, 1), value.repeat_interleave(rep, 1)
    scores = query @ k.transpose(-1, -2) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    return (scores.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_suffix_attention_matches_eager(mask_kind, softcap):
    """Same output and query gradient as the eager formula; the text's keys/values get
    no gradient, the soft positions' get the eager one."""
    from pe_core.training.suffix_attention import suffix_attention

    query, key, value, allowed = _attention_inputs()
    t, q = key.shape[2], query.shape[2]
    if mask_kind == "none":  # what transformers passes when nothing needs masking
        allowed = torch.ones_like(allowed)
        allowed[..., t - q :] = torch.ones(q, q, dtype=torch.bool).tril()
    mask = {"bool": allowed, "none": None,
            "additive": torch.zeros(allowed.shape).masked_fill(~allowed, -1e9)}[mask_kind]
    ref = _reference_attention(query, key, value, allowed, 0.3, softcap)
    out, _ = suffix_attention(None, query, key, value, mask, scaling=0.3, softcap=softcap)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    g_ref = torch.autograd.grad((ref * probe).sum(), [query, key, value])
    g_out = torch.autograd.grad((out * probe).sum(), [query, key, value])
    torch.testing.assert_close(g_out[0], g_ref[0], atol=1e-5, rtol=0)
    for mine, theirs in zip(g_out[1:], g_ref[1:], strict=True):
        assert mine[:, :, : t - q].abs().max() == 0  # the text: no gradient at all
        torch.testing.assert_close(mine[:, :, t - q :], theirs[:, :, t - q :], atol=1e-5,
                                   rtol=0)


def test_new_keys_only_swaps_for_one_pass_and_restores(llama_spec):
    """Inside, the model runs pe's attention (only with grad); after, even after an
    error, its own implementation is back."""
    from pe_core.training.suffix_attention import NAME, new_keys_only

    model = tiny_method(llama_spec).backbone.model
    before = model.config._attn_implementation
    with new_keys_only(model):
        assert model.config._attn_implementation == f"{NAME}_{before}"
    assert model.config._attn_implementation == before
    with torch.no_grad(), new_keys_only(model):
        assert model.config._attn_implementation == before  # nothing to save without grad
    with pytest.raises(RuntimeError, match="boom"), new_keys_only(model):
        raise RuntimeError("boom")
    assert model.config._attn_implementation == before


def test_suffix_attention_falls_back_to_the_models_own(llama_spec):
    """Calls it does not cover (dropout, no text before the queries) go to the model's
    own attention."""
    from pe_core.training.suffix_attention import new_keys_only, suffix_attention

    query, key, value, allowed = _attention_inputs(q=4, t=4, padded=False)

    class Module:
        num_key_value_groups, is_causal, training = 3, True, False

    model = tiny_method(llama_spec).backbone.model
    with new_keys_only(model):
        out, _ = suffix_attention(Module(), query, key, value, allowed, scaling=0.3)
    ref = _reference_attention(query, key, value, allowed, 0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    g = torch.autograd.grad(out.sum(), key)[0]
    assert g.abs().max() > 0  # the model's attention: every key gets its gradient


def test_eager_fallback_is_the_modeling_files_own(llama_spec):
    """For an ``eager`` model the fallback is the modeling file's eager_attention_forward,
    dropout included, not a formula of pe's own; a module from a file without one gets a
    clear error."""
    from transformers.models.llama import modeling_llama

    from pe_core.training.suffix_attention import new_keys_only, suffix_attention

    query, key, value, allowed = _attention_inputs(q=4, t=4, padded=False)
    model = tiny_method(llama_spec).backbone.model
    model.config._attn_implementation = "eager"
    attention = next(m for m in model.modules() if type(m).__name__ == "LlamaAttention")
    attention.num_key_value_groups = 3
    attention.train()
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    with new_keys_only(model):
        torch.manual_seed(5)
        out, _ = suffix_attention(attention, query, key, value, mask, dropout=0.5,
                                  scaling=0.3)
    torch.manual_seed(5)
    ref, _ = modeling_llama.eager_attention_forward(attention, query, key, value, mask,
                                                    dropout=0.5, scaling=0.3)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    no_dropout = _reference_attention(query, key, value, allowed, 0.3)
    assert (out - no_dropout).abs().max() > 0.1  # dropout was applied, as the model does

    class Stranger:  # defined here, in a file with no eager_attention_forward
        training = False

    with new_keys_only(model), pytest.raises(NotImplementedError, match="sdpa"):
        suffix_attention(Stranger(), query, key, value, mask, dropout=0.5, scaling=0.3)


def test_eager_model_fallback_gets_the_eager_mask(llama_spec):
    """An ``eager`` model whose soft pass falls back to its own attention (dropout here)
    gets the mask transformers builds for eager (additive), so the padded text stays
    hidden: the pass equals the model's own, under the same dropout draws."""
    from pe_core.training.kvcache import text_cache
    from pe_core.training.suffix_attention import new_keys_only

    method = tiny_method(llama_spec)
    backbone = method.backbone
    model = backbone.model
    model.config._attn_implementation = "eager"
    for m in model.modules():
        if type(m).__name__ == "LlamaAttention":
            m.attention_dropout = 0.3
    model.train()
    ids, mask = method._pad(method._tokenize(["a short text", "a rather longer text " * 6]))
    assert not mask.all()  # one row is padded
    u = torch.randn(2, 3, backbone.embedding_table.shape[1], generator=torch.Generator()
                    .manual_seed(0), requires_grad=True)
    full = torch.cat([mask, mask.new_ones(2, 3)], dim=1)
    pos = mask.sum(-1, keepdim=True) + torch.arange(3)
    outs = []
    for swapped in (True, False):
        torch.manual_seed(3)  # the same dropout draws, text pass included
        cache = text_cache(backbone, ids, mask)
        with new_keys_only(model) if swapped else contextlib.nullcontext():
            outs.append(model(inputs_embeds=u, attention_mask=full, position_ids=pos,
                              past_key_values=cache, use_cache=True).last_hidden_state)
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)
