"""The ASGI app of ``pe serve``: OpenAI's embeddings API, health, metrics, access log.

The model loads in a thread after the server starts listening, so ``/health`` can say
"loading" (503) until it is ready (200); ``/v1/*`` answers 503 until then. Nothing slow
runs on the event loop: a request's body is parsed in a worker thread and its texts are
tokenized (and measured against the limits) in the server's tokenizer thread, so one
huge request never holds up the others.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from pe_core.errors import ConfigError, PEError, RequestError
from pe_core.serving.backends import Route, ServedModel
from pe_core.serving.batcher import Batcher
from pe_core.serving.errors import CLIENT_CLOSED, http_error
from pe_core.serving.metrics import Metrics
from pe_core.serving.schemas import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorBody,
    ErrorDetail,
    ModelCard,
    ModelList,
)
from pe_core.serving.settings import ServeSettings

log = logging.getLogger("pe.serve")
access_log = logging.getLogger("pe.serve.access")
PATHS = ("/v1/embeddings", "/embeddings", "/v1/models", "/health", "/metrics")
TRUNCATED_HEADER = "X-PE-Truncated"


def error_response(exc: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(message=str(exc), type=exc.type, code=exc.code))
    return JSONResponse(body.model_dump(), status_code=exc.status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes ``limit`` bytes, so a huge upload is
    never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise body_too_large(int(declared), limit)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise body_too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:  # nobody is left to answer: counted as 499, no traceback
        raise RequestError("the client closed the connection before sending the whole body",
                           status=CLIENT_CLOSED, code="client_closed") from None
    return b"".join(chunks)


def shorten(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` values of each unit vector, re-normalised (Matryoshka truncation,
    as OpenAI's ``dimensions`` shortens its vectors)."""
    head = np.asarray(vectors, dtype=np.float32)[:, :dim]
    norms = np.linalg.norm(head, axis=1, keepdims=True)
    return head / np.maximum(norms, np.float32(1e-12))


def body_too_large(size: int, limit: int) -> RequestError:
    return RequestError(
        f"the request body has more than {limit} bytes ({size} so far): split the inputs "
        "over several requests, or start the server with a larger --max-body-mb",
        status=413, code="body_too_large",
    )


def invalid_body(exc: ValidationError) -> RequestError:
    """400 for a body that is not JSON, 422 naming each field that is wrong."""
    errors = exc.errors()
    bad = [e for e in errors if e.get("type") == "json_invalid"]
    if bad:  # the parser's words say where (a lone surrogate such as \ud800 fails here)
        where = str(bad[0].get("msg", "")).removeprefix("Invalid JSON: ")
        return RequestError(f"the body is not valid JSON ({where}; strings must be valid "
                            'Unicode): send a JSON object such as {"model": "pe", '
                            '"input": ["some text"]}', status=400)
    parts = [f"{'.'.join(str(x) for x in e.get('loc', ())) or 'body'}: {e.get('msg')}"
             for e in errors]
    return RequestError("; ".join(parts), status=422, code="invalid_input")


class ServerState:
    """The loaded model, its batcher and the request counters of one app."""

    def __init__(self, settings: ServeSettings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.model: ServedModel | None = None
        self.batcher: Batcher | None = None
        self.load_error: str | None = None
        self.created = int(time.time())
        self.accepted = self.answered = 0
        # one thread tokenizes for every request (the routes' tokenizer copies are used
        # by it alone), off the event loop and beside the inference thread
        self.tokenizer_thread = ThreadPoolExecutor(1, thread_name_prefix="pe-serve-tokenize")
        self.warned_names: set[str] = set()

    async def load(self, load: Callable[[], ServedModel], on_fatal: Callable[[Exception], Any]
                   ) -> None:
        try:
            model = await asyncio.get_running_loop().run_in_executor(None, load)
            self.check_limits(model)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("pe serve: could not load the model: %s", self.load_error)
            on_fatal(exc)
            return
        self.batcher = Batcher(model.name, self.settings, self.metrics)
        self.batcher.start()
        self.model = model
        self.metrics.ready.labels(model=model.name).set(1)
        log.info("pe serve: model %r ready (%s, %d dimensions)", model.name, model.backend,
                 model.dim)

    def check_limits(self, model: ServedModel) -> None:
        reads = min(r.max_length for r in model.routes.values())
        if self.settings.max_tokens is not None and self.settings.max_tokens > reads:
            raise ConfigError(
                f"--max-tokens {self.settings.max_tokens} is more than the model reads "
                f"({reads} tokens, its max_length): lower it"
            )

    def served(self, name: str) -> ServedModel:
        if self.model is None:
            raise RequestError("the model is still loading: retry when /health says ok",
                               status=503, type="server_error", code="loading")
        if name != self.model.name and self.settings.strict_model:
            raise RequestError(
                f"the model {name!r:.100} does not exist: this server serves "
                f"{self.model.name!r} (GET /v1/models)", status=404, code="model_not_found",
            )
        if name != self.model.name and not self.warned_names:
            # clients send their own default name (text-embedding-ada-002): serve it, once said
            log.warning("pe serve: a request named the model %r; serving %r to every name "
                        "(one model; --strict-model answers 404 instead)", name[:100],
                        self.model.name)
            self.warned_names.add(name)
        return self.model

    async def measure(self, route: Route, texts: list[str], limit: int) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.tokenizer_thread, route.measure, texts, limit)

    async def close(self) -> None:
        skipped = 0
        if self.batcher is not None:
            await self.batcher.close()
            skipped = self.batcher.skipped
        self.tokenizer_thread.shutdown(wait=True)
        log.info("pe serve: stopped; answered %d of %d accepted requests; skipped %d "
                 "timed-out jobs", self.answered, self.accepted, skipped)


def create_app(
    load: Callable[[], ServedModel],
    settings: ServeSettings | None = None,
    on_fatal: Callable[[Exception], Any] = lambda exc: None,
) -> FastAPI:
    """The app that serves the model ``load()`` returns (called once, in a thread).

    ``on_fatal(exc)`` is called if loading fails (``pe serve`` then stops).

    Example::

        from functools import partial
        from pe_core.serving.backends import load_torch
        app = create_app(partial(load_torch, "pe", backbone="llama"))
        # uvicorn.run(app, host="127.0.0.1", port=8080)
    """
    settings = settings or ServeSettings()
    metrics = Metrics()
    state = ServerState(settings, metrics)
    if settings.truncate:  # texts are cut on purpose and the response says so
        warnings.filterwarnings("ignore", message=r".* longer than max_length=")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        loading = asyncio.get_running_loop().create_task(state.load(load, on_fatal))
        yield
        if not loading.done():
            loading.cancel()
        await state.close()

    app = FastAPI(title="pe serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.pe = state

    @app.middleware("http")
    async def account(request: Request, call_next: Any) -> Any:
        path = request.url.path
        if path.startswith("/v1/models/"):
            path = "/v1/models"
        path = path if path in PATHS else "other"  # bounded label values
        state.accepted += 1
        start = time.perf_counter()
        code = 500
        try:
            response = await call_next(request)
            code = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - start
            state.answered += 1
            metrics.observe_request(path, code, seconds)
            client = request.client.host if request.client else "-"
            access_log.info('%s "%s %s" %d %.1fms', client, request.method,
                            request.url.path, code, seconds * 1000)

    @app.exception_handler(PEError)
    async def on_pe_error(request: Request, exc: PEError) -> JSONResponse:
        error = http_error(exc)
        headers = {"Retry-After": "1"} if error.status in (429, 503) else None
        return error_response(error, headers)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message += (" (endpoints: POST /v1/embeddings or /embeddings, GET /v1/models, "
                        "/health, /metrics)")
        return error_response(RequestError(message, status=exc.status_code))

    async def authorize(request: Request) -> None:  # async: a sync one runs in a thread
        if settings.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            key.strip().encode(), settings.api_key.encode()
        ):
            raise RequestError(
                "incorrect or missing API key: send it as 'Authorization: Bearer <key>' "
                "(the openai client's api_key)", status=401, code="invalid_api_key",
            )

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.model is not None:
            return JSONResponse({"status": "ok", "model": state.model.name})
        if state.load_error is not None:
            return JSONResponse({"status": "error", "message": state.load_error}, 503)
        return JSONResponse({"status": "loading"}, 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    def card(model: ServedModel) -> ModelCard:
        return ModelCard(id=model.name, created=state.created, pe={
            "backend": model.backend, "dimensions": model.dim,
            "instructions": model.instructions, "prompts": model.prompts,
        })

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> ModelList:
        if state.model is None:
            state.served("")  # raises "loading"
        assert state.model is not None
        return ModelList(data=[card(state.model)])

    @app.get("/v1/models/{name}", dependencies=[Depends(authorize)])
    async def model_info(name: str) -> ModelCard:
        return card(state.served(name))

    @app.post("/v1/embeddings", dependencies=[Depends(authorize)])
    @app.post("/embeddings", dependencies=[Depends(authorize)])  # TEI's and infinity's path
    async def embeddings(request: Request) -> Response:
        raw = await read_body(request, settings.max_body_bytes)
        try:  # whatever its Content-Type (curl -d sends a form type)
            req = await asyncio.to_thread(EmbeddingRequest.model_validate_json, raw)
        except ValidationError as exc:
            raise invalid_body(exc) from None
        model = state.served(req.model)
        if len(req.input) > settings.max_inputs:
            raise RequestError(
                f"{len(req.input)} inputs in one request; at most {settings.max_inputs}: "
                "split it into several requests", status=413, code="too_many_inputs",
            )
        if req.dimensions is not None and not 1 <= req.dimensions <= model.dim:
            raise RequestError(
                f"dimensions={req.dimensions}: this model's embeddings have {model.dim} "
                f"dimensions; send 1 to {model.dim} (each vector is cut to its first "
                "`dimensions` values and re-normalised), or omit it", status=422,
                code="invalid_dimensions",
            )
        route = model.route(model.resolve(req.instruction, req.prompt_name))
        limit = settings.max_tokens or route.max_length
        measured = await state.measure(route, req.input, limit)
        counts = measured.counts
        over = [i for i, n in enumerate(counts) if n > limit]
        if over and not settings.truncate:
            i = over[0]
            tokens = f"more than {counts[i]}" if measured.cut[i] else str(counts[i])
            raise RequestError(
                f"input {i} has {tokens} tokens; at most {limit} per input "
                f"({len(over)} inputs are longer): shorten or split them, or start the "
                "server with --truncate", status=413, code="input_too_long",
            )
        assert state.batcher is not None
        future = state.batcher.submit(route, measured.texts, [min(n, limit) for n in counts])
        try:
            vectors = await asyncio.wait_for(future, settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise RequestError(
                f"not answered within {settings.request_timeout_s:g} s: the server is "
                "overloaded; retry later or raise --request-timeout", status=504,
                type="server_error", code="timeout",
            ) from None
        except PEError as exc:  # the model refused these values (422) or failed (500)
            raise http_error(exc) from exc
        except Exception as exc:  # the encoder failed: the log has the traceback
            raise RequestError(f"encoding failed: {type(exc).__name__}: {exc}", status=500,
                               type="server_error") from exc
        if req.dimensions is not None:
            vectors = shorten(vectors, req.dimensions)
        tokens = sum(min(n, limit) for n in counts)  # what encode read
        metrics.inputs.labels(model=model.name).inc(len(req.input))
        metrics.tokens.labels(model=model.name).inc(tokens)
        body = EmbeddingResponse.build(vectors, model.name, tokens, req.encoding_format)
        headers = {TRUNCATED_HEADER: str(len(over))} if over else None
        return Response(body.model_dump_json(), media_type="application/json",
                        headers=headers)

    return app
