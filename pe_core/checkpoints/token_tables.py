"""A model folder's input token-embedding table, read without building the model.

``pe align`` needs the *source* backbone's table (to carry the trained alignment over to
the new backbone, see :mod:`pe_core.training.align_init`); loading a 7B model to read
one matrix would cost its whole memory, so the table is read from the safetensors
checkpoint directly (sharded or not), and only a folder without one loads the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pe_core.errors import MissingFileError

# parameter names of the input embedding in the families pe supports (and a few more)
TABLE_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")


def read_token_embeddings(folder: str | Path) -> torch.Tensor:
    """The ``(vocab, d)`` input embedding table of the model saved in ``folder`` (float32).

    Example::

        table = read_token_embeddings(resolve_model("pe-default:llama"))
    """
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text()).get("weight_map", {})
        files = {name: folder / file for name, file in weight_map.items()}
    else:
        single = folder / "model.safetensors"
        files = {}
        if single.is_file():
            with safe_open(str(single), framework="pt") as f:
                files = {name: single for name in f.keys()}  # noqa: SIM118 (not a dict)
    name = next((n for n in sorted(files, key=len) if n.endswith(TABLE_SUFFIXES)), None)
    if name is not None:
        with safe_open(str(files[name]), framework="pt") as f:
            return f.get_tensor(name).float()
    return _from_model(folder)


def _from_model(folder: Path) -> torch.Tensor:
    from pe_core.checkpoints.verified import load_base_model

    try:
        model = load_base_model(folder, low_cpu_mem_usage=True)
    except (OSError, ValueError) as err:
        raise MissingFileError(f"no token-embedding table readable in {folder}: {err}") from err
    return model.get_input_embeddings().weight.detach().float()
