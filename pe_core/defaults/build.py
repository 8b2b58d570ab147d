"""Build one embedded default model from local text: tokenizer, pretraining, metadata.

Which folder a caller gets (this machine's build, the shipped copy, or a new build) is
decided in :mod:`pe_core.defaults.lookup`; the command line is :mod:`pe_core.defaults.cli`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pe_core.data import Pair, corpus_fingerprint, load_corpus
from pe_core.defaults.folder import META_NAME, MODEL_WEIGHTS_NAME, is_built
from pe_core.defaults.pretrain import perplexity, pretrain, tokenize_stream
from pe_core.defaults.recipes import RECIPE_VERSION, ModelRecipe
from pe_core.defaults.tokenizer import train_tokenizer


def _texts(corpus: list[Pair], split: str, limit: int | None) -> list[str]:
    texts = [f"{p.query}\n{p.document}" for p in corpus if p.split == split]
    return texts[:limit] if limit else texts


@contextlib.contextmanager
def _build_threads() -> Iterator[int]:
    """Torch intra-op threads for a build: ``$PE_BUILD_THREADS``, else 1 on a busy machine.

    On a machine whose load already fills every core, several spinning OpenMP threads per
    process made a build 5-20x slower than one thread (measured on 2 shared cores). The
    results do not depend on the thread count (checked: same weights and perplexity).
    """
    import torch

    before = torch.get_num_threads()
    wanted = os.environ.get("PE_BUILD_THREADS")
    if wanted:
        threads = max(1, int(wanted))
    elif hasattr(os, "getloadavg") and os.getloadavg()[0] >= (os.cpu_count() or 1):
        threads = 1
    else:
        threads = before
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def build_model(r: ModelRecipe, out_dir: Path) -> dict[str, Any]:
    """Train the tokenizer and the model of recipe ``r`` and save both into ``out_dir``.

    Returns the metadata also written to ``out_dir/pe_default.json``.

    Example::

        >>> meta = build_model(recipe("gemma", tiny=True), Path("/tmp/gemma"))  # doctest: +SKIP
        >>> meta["dev_perplexity"]  # doctest: +SKIP
        212.4
    """
    import tokenizers
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    started = time.perf_counter()
    corpus = load_corpus()
    train_texts = _texts(corpus, "train", r.text_pairs)
    dev_texts = _texts(corpus, "dev", r.text_pairs)

    tokenizer = train_tokenizer(train_texts, r.vocab_size, r.specials)
    config = AutoConfig.for_model(
        r.model_type,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **r.config,
    )
    torch.manual_seed(r.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)

    train_stream = tokenize_stream(tokenizer, train_texts)
    dev_stream = tokenize_stream(tokenizer, dev_texts)
    with _build_threads() as threads:
        losses = pretrain(
            model,
            train_stream,
            steps=r.steps,
            batch_size=r.batch_size,
            seq_len=r.seq_len,
            lr=r.lr,
            warmup_frac=r.warmup_frac,
            weight_decay=r.weight_decay,
            seed=r.seed,
            desc=f"pretrain {r.name}",
        )
        dev = perplexity(model, dev_stream, r.seq_len, r.eval_blocks)
        train = perplexity(model, train_stream, r.seq_len, r.eval_blocks)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    weights = out_dir / MODEL_WEIGHTS_NAME
    meta = {
        "name": r.name,
        "recipe_version": RECIPE_VERSION,
        "tiny": r.tiny,
        "model_type": r.model_type,
        "config_class": type(config).__name__,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "size_bytes": weights.stat().st_size,
        "seed": r.seed,
        "steps": r.steps,
        "batch_size": r.batch_size,
        "seq_len": r.seq_len,
        "train_tokens": len(train_stream.ids),
        "first_loss": losses[0],
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "train_perplexity": train.ppl,
        "dev_perplexity": dev.ppl,
        "dev_bits_per_byte": dev.bits_per_byte,
        "dev_tokens_evaluated": dev.tokens,
        "corpus_fingerprint": corpus_fingerprint(corpus),
        "build_seconds": round(time.perf_counter() - started, 2),
        "torch_threads": threads,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "recipe": r.to_json(),
    }
    (out_dir / META_NAME).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def measure_dev_perplexity(r: ModelRecipe, folder: Path) -> tuple[float, float]:
    """Dev perplexity and bits/byte of the model saved in ``folder`` (as in the build)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = load_corpus()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    stream = tokenize_stream(tokenizer, _texts(corpus, "dev", r.text_pairs))
    with _build_threads():
        dev = perplexity(model, stream, r.seq_len, r.eval_blocks)
    return dev.ppl, dev.bits_per_byte


def build_once(r: ModelRecipe, root: Path, *, rebuild: bool = False) -> Path:
    """Build recipe ``r`` into ``root/<name>`` unless it is there already (or ``rebuild``).

    A file lock makes concurrent callers wait for one build; the build goes to a temporary
    folder renamed into place, so a crash never leaves a half-written model behind.

    Example::

        >>> build_once(recipe("qwen", tiny=True), Path("/tmp/defaults"))  # doctest: +SKIP
        PosixPath('/tmp/defaults/qwen')
    """
    from filelock import FileLock

    name = r.name
    final = root / name
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        if is_built(final) and not rebuild:
            return final  # another process built it while we waited
        for stale in root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed build
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            build_model(r, tmp)
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
                os.replace(final, old / name)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
