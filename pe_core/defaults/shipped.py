"""Default models shipped inside the package, so a fresh machine needs no 20-minute build.

The full-size backbones of recipe v2 take about 20 minutes of CPU each to pretrain, too
long for a first run of ``pe demo``. Their built folders are therefore copied into
``pe_core/defaults/shipped/<version>/<name>/`` with the weights stored as float16 (half the
bytes; the tensors load into float32 models). ``python -m pe_core.defaults --ship``
makes these folders from this machine's builds; :mod:`pe_core.defaults.lookup` decides
when a shipped folder is used.

Example::

    >>> from pe_core.defaults.shipped import shipped_folder
    >>> shipped_folder("llama")  # doctest: +SKIP
    PosixPath('.../pe_core/defaults/shipped/v2/llama')
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pe_core.defaults.build import measure_dev_perplexity
from pe_core.defaults.folder import META_NAME, MODEL_WEIGHTS_NAME, folder_meta
from pe_core.defaults.recipes import RECIPE_VERSION, recipe

SHIPPED_ROOT = Path(__file__).resolve().parent / "shipped"
SHIPPED_DTYPE = "float16"


def shipped_root() -> Path:
    """``<package>/defaults/shipped/<recipe version>/``."""
    return SHIPPED_ROOT / RECIPE_VERSION


def shipped_folder(name: str) -> Path | None:
    """The shipped folder of full-size default ``name``, if the package carries one built
    from the current recipe (a folder from another recipe is ignored)."""
    folder = shipped_root() / name
    meta = folder_meta(folder)
    if meta is None or meta.get("recipe_version") != RECIPE_VERSION:
        return None
    if meta.get("recipe") != json.loads(json.dumps(recipe(name).to_json())):
        return None
    return folder


def _half_weights(src: Path, dst: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    tensors = {}
    with safe_open(str(src), framework="pt") as f:
        metadata = f.metadata() or {}
        for key in f.keys():
            t = f.get_tensor(key)
            tensors[key] = t.half() if t.is_floating_point() else t
    save_file(tensors, str(dst), metadata={**metadata, "pe_shipped_dtype": SHIPPED_DTYPE})


def ship(name: str, built: Path) -> Path:
    """Copy the built folder of ``name`` into the package, weights as float16.

    The metadata keeps the build's numbers and adds the shipped weights' own dev
    perplexity (``dev_perplexity``; the float32 build's is ``built_dev_perplexity``).
    """
    meta = folder_meta(built)
    if meta is None:
        raise FileNotFoundError(f"{built} holds no built default model")
    root = shipped_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    try:
        for item in built.iterdir():
            if item.name not in (MODEL_WEIGHTS_NAME, META_NAME) and item.is_file():
                shutil.copy2(item, tmp / item.name)
        _half_weights(built / MODEL_WEIGHTS_NAME, tmp / MODEL_WEIGHTS_NAME)
        shipped = dict(meta)
        shipped["recipe_version"] = RECIPE_VERSION
        shipped["shipped_dtype"] = SHIPPED_DTYPE
        shipped["built_dev_perplexity"] = meta["dev_perplexity"]
        shipped["dev_perplexity"], shipped["dev_bits_per_byte"] = measure_dev_perplexity(
            recipe(name), tmp
        )
        shipped["size_bytes"] = (tmp / MODEL_WEIGHTS_NAME).stat().st_size
        (tmp / META_NAME).write_text(json.dumps(shipped, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp made it private; the package's files are world-readable
        for item in tmp.iterdir():
            item.chmod(0o644)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / name
