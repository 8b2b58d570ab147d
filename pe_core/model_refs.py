"""Model references -> local folders: a folder, an embedded default (``pe-default:NAME``),
a real-tier checkpoint (``pe-real:NAME``), a GGUF file (local or ``org/repo[@rev]:file.gguf``),
a name a plugin resolver knows (e.g. the local registry), or a Hub id (``org/name`` or
``org/name@revision``). Folders are checked before transformers reads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pe_core.checkpoints.hub import download, split_revision
from pe_core.errors import ConfigError, MissingFileError
from pe_core.safe_io import check_safetensors

DEFAULT_PREFIX = "pe-default:"
REAL_PREFIX = "pe-real:"
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def ref_id(ref: str | os.PathLike[str]) -> str:
    """The id a model reference is recorded under (``model_id``/``prompting_id``) and
    looked up by: an existing local folder as its absolute path, so ``m``, ``./m`` and
    ``Path("m")`` name the same model; ``pe-default:NAME`` as ``pe-default:NAME@<recipe
    version>``; a local GGUF file as its absolute path; anything else (Hub id, registry name,
    ``pe-real:NAME``, ``org/repo:file.gguf``) as given."""
    text = str(ref)
    if text.startswith(DEFAULT_PREFIX) and "@" not in text:
        from pe_core.defaults.recipes import RECIPE_VERSION

        # the recipe version is the default model's revision: an alignment trained on
        # another recipe's model (other widths) must not be found for this one
        return f"{text}@{RECIPE_VERSION}"
    path = Path(text).expanduser()
    return os.path.abspath(path) if path.is_dir() or path.is_file() else text


def resolve_model(ref: str | os.PathLike[str], model_types: tuple[str, ...] = ()) -> Path:
    """A local folder holding ``ref``'s config, tokenizer and safetensors weights.

    ``ref`` is a folder, ``pe-default:NAME``, ``pe-real:NAME``, a ``*.gguf`` file,
    ``org/repo[@rev]:file.gguf``, a name a plugin resolver knows, or a Hub id. A GGUF is
    dequantized once into pe's cache; ``model_types`` (a backbone family's) are checked
    before that.
    """
    from pe_core.checkpoints import gguf

    ref = str(ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        return check_model_folder(path)
    if ref.startswith(DEFAULT_PREFIX):
        from pe_core.defaults import RECIPE_VERSION, ensure_default

        name, version = split_revision(ref[len(DEFAULT_PREFIX) :])
        if version not in (None, RECIPE_VERSION):
            raise MissingFileError(
                f"{ref} names default models of recipe {version}, but this pe has recipe "
                f"{RECIPE_VERSION} (other sizes): retrain on pe-default:{name}"
            )
        return check_model_folder(ensure_default(name))
    if ref.startswith(REAL_PREFIX):
        from pe_core.checkpoints.real_tier import real_folder

        return check_model_folder(real_folder(ref[len(REAL_PREFIX) :], model_types))
    if gguf.is_gguf_ref(ref):
        file = path if path.is_file() or gguf.split_hub_ref(ref) is None else gguf.download(ref)
        return check_model_folder(gguf.gguf_folder(file, model_types=model_types))
    from pe_core.plugins import get_plugin_manager

    for resolver in get_plugin_manager().resolvers():
        if resolver.name == "folder":
            continue
        found = resolver.resolve(ref)
        if found is not None:
            return check_model_folder(found)
    if path.is_absolute() or ref.startswith((".", "~")) or ref.count("/") > 1:
        raise MissingFileError(f"model folder {ref} does not exist")
    return check_model_folder(download(ref))


def check_model_config(path: Path) -> None:
    """A model's ``config.json`` is a JSON object naming its ``model_type`` (what
    transformers builds the model from); :class:`ConfigError` otherwise, before
    transformers reads it and raises its own errors."""
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): copy the model's config.json "
                          "back") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(f"{path} names no model_type: it is not a transformers model "
                          "config; copy the model's config.json back")


def check_model_folder(path: Path) -> Path:
    """Raise a typed error if a model folder lacks its config, weights or tokenizer, or
    if a weights file is truncated."""
    if not (path / "config.json").is_file():
        raise MissingFileError(f"{path} has no config.json: not a transformers model folder")
    check_model_config(path / "config.json")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        extra = " (only pickle .bin weights, which pe refuses to load)" if list(
            path.glob("*.bin")
        ) else ""
        raise MissingFileError(f"{path} has no *.safetensors weights{extra}")
    for file in weights:
        check_safetensors(file)
    # the vocabulary itself: tokenizer_config.json alone cannot make a tokenizer
    if not any((path / f).is_file() for f in VOCAB_FILES):
        raise MissingFileError(
            f"{path} has no tokenizer vocabulary (one of {', '.join(VOCAB_FILES)}): copy the "
            "model's tokenizer files into it"
        )
    return path
