"""GGUF files as models: read, check, dequantize once, cache as a safetensors folder.

``model=`` and ``prompting=`` accept a local ``*.gguf`` file or ``org/repo[@rev]:file.gguf``
on the Hub. The file's weights are dequantized through transformers' GGUF loader (the
``pe-core[gguf]`` extra: ``gguf`` and ``accelerate``) and saved, with the tokenizer rebuilt
from the file's metadata (:mod:`pe_core.checkpoints.gguf_tokenizer`), under
``$PE_CACHE/gguf/<sha256 of the file>-v<converter version>/``. The second load of the
same file is a plain safetensors load. The folder appears only once complete (built in a
temporary folder, then renamed); an interrupted dequantization leaves nothing behind.

Example::

    folder = gguf_folder(Path("SmolLM2-135M-Instruct.Q4_1.gguf"))
    # -> ~/.cache/pe/gguf/b179c952…-v1/ with config.json, model.safetensors, tokenizer.json
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pe_core.errors import CorruptFileError, MissingFileError, ModelTypeMismatchError
from pe_core.extras import require_extra as require

logger = logging.getLogger(__name__)

SUFFIX = ".gguf"
META_NAME = "pe_gguf.json"  # written last: a folder without it is not finished
# bumped whenever the conversion changes, so a folder an older pe wrote is rebuilt
CONVERTER_VERSION = 1
# GGUF ``general.architecture`` -> the transformers model_type its weights load as
ARCH_MODEL_TYPES = {
    "llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3",
    "gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text", "phi3": "phi3",
}


def is_gguf_ref(ref: str) -> bool:
    """A local ``*.gguf`` path or ``org/repo[@rev]:file.gguf``."""
    return ref.lower().endswith(SUFFIX)


def split_hub_ref(ref: str) -> tuple[str, str | None, str] | None:
    """``"org/repo@rev:dir/file.gguf"`` -> ``("org/repo", "rev", "dir/file.gguf")``;
    None for anything else (a local path)."""
    repo, sep, filename = ref.partition(":")
    if not sep or not filename or repo.count("/") != 1 or Path(ref).exists():
        return None
    name, _, rev = repo.partition("@")
    return name, (rev or None), filename


def require_extra() -> None:
    """Typed error naming the extra when ``gguf`` or ``accelerate`` is missing."""
    require("gguf accelerate".split(), "pe-core[gguf]", "loading a GGUF file")


def read_metadata(path: Path) -> dict[str, Any]:
    """Every key/value field of a GGUF file; :class:`CorruptFileError` when the file is
    truncated or not GGUF (the reader maps every tensor, so a short file fails here)."""
    require_extra()
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        return {key: field.contents() for key, field in reader.fields.items()}
    except Exception as exc:  # numpy/struct/ValueError from the reader: all mean unreadable
        raise CorruptFileError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); it is "
            "truncated or corrupt: download it again"
        ) from exc


def model_type(metadata: dict[str, Any], path: Path) -> str:
    """The transformers model_type of a GGUF file's architecture."""
    arch = metadata.get("general.architecture")
    if arch not in ARCH_MODEL_TYPES:
        raise ModelTypeMismatchError(
            f"{path} is a GGUF of architecture {arch!r}, which pe does not load "
            f"(it reads {sorted(ARCH_MODEL_TYPES)})"
        )
    return ARCH_MODEL_TYPES[str(arch)]


def download(ref: str) -> Path:
    """Fetch ``org/repo[@rev]:file.gguf`` through the Hub client into its cache."""
    from huggingface_hub import hf_hub_download

    from pe_core.checkpoints.hub import hub_errors, hub_offline

    parts = split_hub_ref(ref)
    if parts is None:
        raise CorruptFileError(f"{ref} is neither a GGUF file nor org/repo[@rev]:file.gguf")
    repo, rev, filename = parts
    with hub_errors(ref, repo, rev):
        return Path(hf_hub_download(repo, filename, revision=rev,
                                    local_files_only=hub_offline()))


def cached_folder(sha256: str) -> Path | None:
    """The finished cache folder of the GGUF file with this sha256, if there is one."""
    from pe_core.data.cache import cache_dir

    folder = cache_dir() / "gguf" / f"{sha256}-v{CONVERTER_VERSION}"
    return folder if (folder / META_NAME).is_file() else None


def gguf_folder(path: Path, sha256: str | None = None, model_types: tuple[str, ...] = ()) -> Path:
    """The cached safetensors folder of the GGUF file ``path``, made on first use.

    ``sha256`` pins the file (a mismatch is a :class:`CorruptFileError`); ``model_types``
    (a backbone family's) are checked before any dequantization.
    """
    from filelock import FileLock

    from pe_core.data.cache import cache_dir
    from pe_core.safe_io import sha256_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"GGUF file {path} does not exist")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise CorruptFileError(
            f"{path} has sha256 {digest}, expected {sha256}: the file is corrupt or not the "
            "pinned one; reinstall the package or download it again"
        )
    done = cached_folder(digest)
    if done is not None:
        _check_type(done, model_types, path)
        return done
    root = cache_dir() / "gguf"
    final = root / f"{digest}-v{CONVERTER_VERSION}"
    metadata = read_metadata(path)
    found = model_type(metadata, path)
    if model_types and found not in model_types:
        _mismatch(path, found, model_types)
    from pe_core.checkpoints.gguf_tokenizer import tokenizer_kind

    tokenizer_kind(metadata, path)  # no tokenizer: fail before the slow part
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{digest}.lock")):
        if not (final / META_NAME).is_file():
            for stale in root.glob(f".{digest}.tmp-*"):  # a killed run's (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            _dequantize(path, metadata, digest, root, final)
    return final


def _dequantize(path: Path, metadata: dict[str, Any], digest: str, root: Path,
                final: Path) -> None:
    from pe_core.checkpoints.gguf_tokenizer import gguf_tokenizer
    from pe_core.checkpoints.verified import load_causal_lm

    start = time.perf_counter()
    logger.warning("dequantizing %s once into %s (later loads read the cache)", path, final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.tmp-", dir=root))
    try:
        model = load_causal_lm(path.parent, gguf_file=path.name)
        model.save_pretrained(tmp)
        del model
        gguf_tokenizer(path, metadata).save_pretrained(tmp)
        info = {
            "source": str(path), "sha256": digest, "size_bytes": path.stat().st_size,
            "architecture": metadata.get("general.architecture"),
            "name": metadata.get("general.name"),
            "tokenizer": metadata.get("tokenizer.ggml.model"),
            "seconds": round(time.perf_counter() - start, 1),
            "converter_version": CONVERTER_VERSION,
        }
        (tmp / META_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_type(folder: Path, model_types: tuple[str, ...], path: Path) -> None:
    if not model_types:
        return
    found = json.loads((folder / "config.json").read_text(encoding="utf-8"))["model_type"]
    if found not in model_types:
        _mismatch(path, found, model_types)


def _mismatch(path: Path, found: str, model_types: tuple[str, ...]) -> None:
    from pe_core.plugins import get_plugin_manager

    owner = get_plugin_manager().backbones().for_model_type(found)
    hint = f"use backbone={owner.name!r}" if owner else "no installed plugin handles it"
    raise ModelTypeMismatchError(
        f"{path} holds a {found!r} model, but the chosen backbone handles "
        f"{list(model_types)}: {hint}"
    )
