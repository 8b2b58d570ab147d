"""``pe serve``: an embedder behind OpenAI's ``POST /v1/embeddings``.

``settings`` (limits and batching), ``backends`` (the model a server holds: torch or
exported ONNX graphs), ``batcher`` (one bounded queue and one inference thread per
model), ``schemas`` (OpenAI's request, response and error bodies), ``metrics``
(Prometheus), ``errors`` (which pe errors are the client's: 4xx, or 500), ``app`` (the
FastAPI routes) and ``server`` (uvicorn, graceful shutdown). Only ``settings``,
``backends`` and ``errors`` import without the ``serve`` extra.
"""
