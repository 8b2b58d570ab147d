"""Helpers shared by the registry tests: tiny artifacts, folder snapshots, CLI runs."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- tiny artifacts ----------------------------------------------------------------------
def write_alignment(
    folder: Path,
    d_P: int = 8,
    d_B: int = 16,
    seed: int = 0,
    config_dims: tuple[int, int] | None = None,
    model_id: str | None = "org/tiny",
    prompting_id: str | None = "org/p",
    eval_results: dict[str, Any] | None = None,
) -> Path:
    """An alignment folder (or training run): random weights + pe_config.json."""
    import torch

    from pe_core.model.alignment import Alignment
    from pe_core.model.config import EmbedderConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    Alignment(d_P, d_B).save(folder / "alignment.safetensors")
    cd_P, cd_B = config_dims or (d_P, d_B)
    EmbedderConfig(
        backbone="llama",
        d_P=cd_P,
        d_B=cd_B,
        model_id=model_id,
        prompting_id=prompting_id,
        eval_results=eval_results or {},
    ).save(folder)
    return folder


def write_prompting_model(folder: Path, hidden: int = 8, seed: int = 0) -> Path:
    """A stand-in trained Prompting LLM folder (never loaded as a model here)."""
    import torch

    from pe_core.safe_io import save_tensors

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps(
            {"model_type": "llama", "hidden_size": hidden, "architectures": ["LlamaForCausalLM"]}
        )
    )
    torch.manual_seed(seed)
    save_tensors({"embed_tokens.weight": torch.randn(4, hidden)}, folder / "model.safetensors", {})
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"a pickle that must never be published")
    return folder


def write_run(folder: Path, seed: int = 0, with_prompting: bool = True, **kw: Any) -> Path:
    """A training run: alignment + prompting/ + checkpoints/ + log.jsonl."""
    write_alignment(folder, seed=seed, **kw)
    if with_prompting:
        write_prompting_model(folder / "prompting", hidden=kw.get("d_P", 8), seed=seed)
    (folder / "checkpoints").mkdir(exist_ok=True)
    (folder / "checkpoints" / "step-1.safetensors").write_bytes(b"x")
    (folder / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return folder


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (the lock file aside): "unchanged" means equal."""
    if not root.exists():
        return {}
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m pe_registry ARGS`` in a fresh interpreter with the current env."""
    return subprocess.run(
        [sys.executable, "-m", "pe_registry", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
