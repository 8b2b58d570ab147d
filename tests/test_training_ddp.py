"""Two CPU processes (gloo on 127.0.0.1) give the gradients one process gives on the same
global batch: DDP averaging plus negatives gathered from every rank with gradients."""

from __future__ import annotations

import json
import os
import socket
import warnings
from pathlib import Path

import torch
from training_helpers import pair_records, tiny_examples, write_jsonl

WORLD = 2
GLOBAL_BATCH = 8
CASES = (("pe", 0), ("pe", 5), ("lora", 0), ("lora", 6))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _method(kind: str, model_dir: str):
    from pe_core.plugins import get_backbone
    from pe_core.training.settings import TrainSettings

    spec = get_backbone("llama")
    torch.manual_seed(0)
    if kind == "lora":
        from pe_core.training.lora_baseline import LoraMethod, build_lora_embedder

        s = TrainSettings(method="lora", lora_dropout=0.0)
        return LoraMethod(build_lora_embedder(spec, Path(model_dir), s), s)
    from pe_core.testing.tiny import tiny_embedder
    from pe_core.training.methods import PromptEmbedderMethod

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        method = PromptEmbedderMethod(tiny_embedder(spec), TrainSettings())
    method.train_mode(True)
    return method


def _grads(kind: str, chunk: int, model_dir: str, rank: int = 0, world: int = 1) -> dict:
    from pe_core.training.data import negatives_per_example
    from pe_core.training.distributed import wrap_ddp
    from pe_core.training.gradcache import contrastive_step
    from pe_core.training.methods import StepInfo

    method = _method(kind, model_dir)
    method.module = wrap_ddp(method.module, torch.device("cpu"))
    examples = tiny_examples(GLOBAL_BATCH)
    per = GLOBAL_BATCH // world
    rows = method.rows(examples[rank * per : (rank + 1) * per],
                       negatives_per_example(examples, 1))
    contrastive_step(method, rows, StepInfo(0, tau=0.7, noise_seed=3), 0.05, chunk)
    return {f"{kind}{chunk}/{n}": p.grad.detach().clone()
            for n, p in method.named_trainable().items()}


def _worker(rank: int, port: int, model_dir: str, prompting_dir: str, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    import pe_core

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        grads = {}
        for kind, chunk in CASES:
            grads.update(_grads(kind, chunk, model_dir, rank, WORLD))
        save_file(grads, os.path.join(out, f"grads-{rank}.safetensors"))
        # the real entry point, as torchrun runs it: setup() finds the process group
        data = write_jsonl(Path(out) / f"pairs-{rank}.jsonl", pair_records(32))
        pe_core.train(str(data), backbone="llama", model=model_dir, prompting=prompting_dir,
                      out=os.path.join(out, "run"), steps=3, batch_size=8, progress=False,
                      save_every=2, device="cpu")
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process(tiny_folders, tmp_path):
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    mp.spawn(_worker, args=(_free_port(), str(tiny_folders["model"]),
                            str(tiny_folders["prompting"]), str(tmp_path)),
             nprocs=WORLD, join=True)
    rank0 = load_file(tmp_path / "grads-0.safetensors")
    rank1 = load_file(tmp_path / "grads-1.safetensors")
    for kind, chunk in CASES:
        single = _grads(kind, chunk, str(tiny_folders["model"]))
        assert single, (kind, chunk)
        for name, g in single.items():
            # DDP leaves every rank with the same averaged gradient ...
            torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0)
            # ... equal to one process on the whole global batch
            scale = g.abs().max().clamp(min=1e-12)
            assert (rank0[name] - g).abs().max() / scale < 1e-4, name
    run = tmp_path / "run"
    assert (run / "alignment.safetensors").is_file() and (run / "prompting").is_dir()
    steps = [json.loads(line) for line in (run / "log.jsonl").open()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2, 3]
