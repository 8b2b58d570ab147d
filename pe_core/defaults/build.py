"""Build the embedded default models from local text, once per machine, safely.

``python -m pe_core.defaults.build [--tiny] [--force] [--ship] [NAME ...]`` builds them all
(or the named ones) and prints the size/perplexity table; ``--ship`` then copies them into
the package (:mod:`pe_core.defaults.shipped`). Library code calls :func:`ensure_default`.
"""

from __future__ import annotations

import argparse
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

from pe_core.data import Pair, cache_dir, corpus_fingerprint, load_corpus
from pe_core.defaults.folder import META_NAME, WEIGHTS_NAME, folder_meta, is_built
from pe_core.defaults.pretrain import perplexity, pretrain, tokenize_stream
from pe_core.defaults.recipes import DEFAULT_NAMES, RECIPE_VERSION, ModelRecipe, recipe
from pe_core.defaults.shipped import ship, shipped_folder
from pe_core.defaults.tokenizer import train_tokenizer
from pe_core.errors import ConfigError


def _tiny_from_env(tiny: bool | None) -> bool:
    if tiny is not None:
        return tiny
    return os.environ.get("PE_DEFAULTS_TINY", "").lower() in ("1", "true", "yes")


def defaults_root(tiny: bool | None = None) -> Path:
    """``<cache>/defaults/<recipe version>/`` (or ``...-tiny/``): one folder per default model
    built on this machine."""
    suffix = "-tiny" if _tiny_from_env(tiny) else ""
    return cache_dir() / "defaults" / f"{RECIPE_VERSION}{suffix}"


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
    weights = out_dir / WEIGHTS_NAME
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


def ensure_default(name: str, *, tiny: bool | None = None, rebuild: bool = False) -> Path:
    """The folder of default model ``name``: built on this machine, else shipped with the
    package (:mod:`pe_core.defaults.shipped`), else built now.

    ``name`` is one of ``"prompting"``, ``"llama"``, ``"mistral"``, ``"qwen"``, ``"gemma"``.
    The folder loads with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.
    ``tiny`` (default: env ``PE_DEFAULTS_TINY``) selects the seconds-to-build test variants.
    ``rebuild`` builds on this machine even when a model is cached or shipped.
    A file lock makes concurrent callers wait for one build; the build goes to a temporary
    folder renamed into place, so a crash never leaves a half-written model behind.

    Example::

        >>> from transformers import AutoModelForCausalLM
        >>> path = ensure_default("qwen")
        >>> model = AutoModelForCausalLM.from_pretrained(path)
    """
    from filelock import FileLock

    r = recipe(name, tiny=_tiny_from_env(tiny))
    root = defaults_root(r.tiny)
    final = root / name
    if is_built(final) and not rebuild:
        return final
    shipped = None if (r.tiny or rebuild) else shipped_folder(name)
    if shipped is not None:
        return shipped
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


def read_meta(name: str, *, tiny: bool | None = None) -> dict[str, Any] | None:
    """The ``pe_default.json`` of the default model :func:`ensure_default` would return
    without building (this machine's build, else the shipped one), or None."""
    meta = folder_meta(defaults_root(tiny) / name)
    if meta is None and not _tiny_from_env(tiny):
        shipped = shipped_folder(name)
        meta = None if shipped is None else folder_meta(shipped)
    return meta


def main(argv: list[str] | None = None) -> int:
    from pe_core.defaults.table import default_table, format_table

    parser = argparse.ArgumentParser(
        prog="python -m pe_core.defaults.build",
        description="Build pe's default models (tokenizers + small causal LMs) from local text.",
    )
    parser.add_argument(
        "names", nargs="*", help=f"models to build (default: all of {DEFAULT_NAMES})"
    )
    parser.add_argument("--tiny", action="store_true", help="the seconds-to-build test variants")
    parser.add_argument("--force", action="store_true", help="rebuild even if already built")
    parser.add_argument(
        "--ship", action="store_true",
        help="copy this machine's builds into the package (float16 weights), for release",
    )
    args = parser.parse_args(argv)
    names = args.names or list(DEFAULT_NAMES)
    unknown = [n for n in names if n not in DEFAULT_NAMES]
    if unknown:
        raise ConfigError(f"unknown default model(s) {unknown}; choose from {DEFAULT_NAMES}")
    started = time.perf_counter()
    load_corpus()
    for name in names:
        path = ensure_default(name, tiny=args.tiny, rebuild=args.force)
        if args.ship:
            if args.tiny:
                raise ConfigError("--ship is for the full-size models, not --tiny")
            path = ship(name, path)
        print(f"{name}: {path}", file=sys.stderr)
    print(format_table(default_table(tiny=args.tiny, names=names)))
    print(f"\ntotal {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
