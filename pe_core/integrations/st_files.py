"""The two files that make a pe model folder a sentence-transformers model folder, written
by every save of a pe model (``PromptEmbedder.save``, ``pe push``). Plain JSON: writing them
needs no sentence-transformers install.

``modules.json`` lists one module, :class:`~pe_core.integrations.sentence_transformers.PEModule`,
whose files are pe's own (``pe_config.json``, ``alignment.safetensors``, ``prompting/``)
at the folder's root. No ``Normalize`` module follows it: PEModule returns unit vectors
already, as ``PromptEmbedder.encode`` does.

``config_sentence_transformers.json`` carries pe's named prompts as sentence-transformers
``prompts``: the value is the instruction itself. sentence-transformers hands the
resolved prompt text to the input module's ``preprocess(..., prompt=...)`` (v5.x), and
PEModule turns it into the soft prompt instead of prepending it to the text, so
``encode(texts, prompt_name="query")`` embeds with the query instruction and
``encode(texts, prompt="any instruction")`` with a free-text one.

Example::

    write_st_files("runs/x", EmbedderConfig.load("runs/x"))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODULES_NAME = "modules.json"
ST_CONFIG_NAME = "config_sentence_transformers.json"
ST_FILES = (MODULES_NAME, ST_CONFIG_NAME)
MODULE_CLASS = "pe_core.integrations.sentence_transformers.PEModule"


def st_config(config: Any) -> dict[str, Any]:
    """``config_sentence_transformers.json`` for an ``EmbedderConfig``."""
    from pe_core import __version__

    return {
        "__version__": {"pe_core": __version__},
        "model_type": "SentenceTransformer",
        "prompts": dict(config.prompts),
        "default_prompt_name": config.default_prompt_name,
        "similarity_fn_name": "cosine",
    }


def write_st_files(folder: str | Path, config: Any) -> None:
    """Write ``modules.json`` and ``config_sentence_transformers.json`` into ``folder``
    (next to the ``pe_config.json`` of ``config``)."""
    folder = Path(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": MODULE_CLASS}]
    (folder / MODULES_NAME).write_text(json.dumps(modules, indent=2) + "\n")
    (folder / ST_CONFIG_NAME).write_text(json.dumps(st_config(config), indent=2) + "\n")
