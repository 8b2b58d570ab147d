"""Texts, direct-encode references and HTTP helpers shared by the serving tests."""

from __future__ import annotations

import warnings

WORDS = ("open a file read the lines return a list of strings parse the json document "
         "and raise an error when the value is missing from the mapping or the path does "
         "not exist on disk").split()


def text(i: int, words: int) -> str:
    """A deterministic text of ``words`` words, different for every ``i``."""
    return f"text {i}: " + " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words))


def texts(n: int, longest: int = 24) -> list[str]:
    return [text(i, 1 + (i * 5) % longest) for i in range(n)]


def load_direct():
    """The embedder ``pe serve --backbone llama`` serves, loaded in this process."""
    import pe_core

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained alignment
        return pe_core.load(backbone="llama")


def post(client, url: str, body, key: str | None = None, headers=None, **kw):
    headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    if isinstance(body, bytes | str):
        return client.post(url + "/v1/embeddings", content=body, headers=headers, **kw)
    return client.post(url + "/v1/embeddings", json=body, headers=headers, **kw)


def embeddings(response) -> list[list[float]]:
    data = response.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return [d["embedding"] for d in data]
