"""Evaluation: local MTEB tasks, an mteb encoder wrapper, and a BM25 baseline.

Submodules import mteb, so this package loads them only when a name is first used.

Example::

    import mteb
    from pe_core.eval import MTEBEncoder, get_tasks
    tasks = get_tasks(["PELocalDocstringRetrieval", "PELocalDocstringPairClassification"])
    results = mteb.evaluate(MTEBEncoder(embedder), tasks, cache=None)
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "get_tasks": "pe_core.eval.catalog",
    "LOCAL_TASKS": "pe_core.eval.tasks",
    "REAL_TASKS": "pe_core.eval.tasks",
    "PELeeSTS": "pe_core.eval.tasks",
    "PEWordNetRetrieval": "pe_core.eval.tasks",
    "PELocalDocstringRetrieval": "pe_core.eval.tasks",
    "PELocalDocstringPairClassification": "pe_core.eval.tasks",
    "MTEBEncoder": "pe_core.eval.mteb_encoder",
    "model_meta_for": "pe_core.eval.mteb_encoder",
    "pe_model_meta": "pe_core.eval.mteb_encoder",
    "register": "pe_core.eval.mteb_encoder",
    "BM25Search": "pe_core.eval.bm25",
    "bm25_baseline": "pe_core.eval.bm25",
    "instruction_for": "pe_core.eval.instructions",
    "LOCAL_TASK_NAMES": "pe_core.eval.names",
    "REAL_TASK_NAMES": "pe_core.eval.names",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pe_core.eval' has no attribute {name!r}")
