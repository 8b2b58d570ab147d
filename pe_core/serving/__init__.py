"""``pe serve``: an embedder behind OpenAI's ``POST /v1/embeddings``.

``settings`` (limits and batching), ``backends`` (the model a server holds: torch or
exported ONNX graphs), ``batcher`` (one bounded queue and one inference thread per
model), ``schemas`` (OpenAI's request, response and error bodies), ``metrics``
(Prometheus), ``app`` (the FastAPI routes) and ``server`` (uvicorn, graceful shutdown).
Only ``settings`` and ``backends`` import without the ``serve`` extra.
"""
