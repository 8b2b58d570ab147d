"""Dynamic batching: one bounded queue and one inference thread per model.

Requests are queued as jobs; the worker takes the first, gathers more until they hold
``max_batch_size`` texts or ``batch_wait_ms`` has passed (0: whatever is queued now,
which under load is whatever arrived while the last batch ran), and encodes the texts of
each route (encoder + instruction) with ``encode``, which sorts them by length as it does
for any caller; a text's embedding then differs from a direct ``encode`` only by padding
(within 1e-6). A full queue refuses a job at once.

Requests from many clients mix short queries with long documents, and one padded batch
would run every text at the longest one's length: the texts are first split into groups
of similar length (:func:`pe_core.model.batching.length_groups`, the cheapest split for a
fixed per-call cost), one ``encode`` call each.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pe_core.errors import RequestError
from pe_core.serving.backends import Route
from pe_core.serving.errors import is_clients
from pe_core.serving.metrics import Metrics
from pe_core.serving.settings import ServeSettings

log = logging.getLogger("pe.serve")


@dataclass
class Job:
    route: Route
    texts: list[str]
    lengths: list[int]  # tokens per text, as encode will see them (truncated)
    future: asyncio.Future[Any] = field(repr=False)


class Batcher:
    """Queue of one model, drained by one inference thread.

    Example::

        batcher = Batcher("pe", settings, metrics)
        batcher.start()                                  # inside the event loop
        vectors = await batcher.submit(route, ["hello"])  # (1, d) float32
        await batcher.close()                            # answers what is queued first
    """

    def __init__(self, model: str, settings: ServeSettings, metrics: Metrics) -> None:
        self.model, self.settings, self.metrics = model, settings, metrics
        self._queue: deque[Job] = deque()
        self._queued_texts = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        # one thread: the model is never run by two threads at once
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"pe-serve-{model}")
        self._task: asyncio.Task[None] | None = None
        self.skipped = 0  # jobs whose request timed out before the worker reached them

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, route: Route, texts: list[str], lengths: list[int]) -> asyncio.Future[Any]:
        """Queue ``texts`` (``lengths``: their token counts); the future resolves to their
        ``(n, d)`` embeddings. Raises
        :class:`RequestError` 429 when the queue has no room, 503 when closing."""
        if self._closing:
            raise RequestError("the server is shutting down: retry on another replica",
                               status=503, type="server_error", code="shutting_down")
        if self._queued_texts + len(texts) > self.settings.max_queue:
            raise RequestError(
                f"the queue is full ({self._queued_texts} texts waiting, room for "
                f"{self.settings.max_queue}): retry later, or start the server with a larger "
                "--max-queue", status=429, type="rate_limit_error", code="queue_full",
            )
        job = Job(route, texts, lengths, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued_texts += len(texts)
        self.metrics.queue_depth.labels(model=self.model).set(self._queued_texts)
        self._wakeup.set()
        return job.future

    async def close(self) -> None:
        """Stop taking jobs, answer every queued one, stop the thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    # -- worker ----------------------------------------------------------------------
    def _take(self) -> Job | None:
        """The next job still waited for (timed-out ones are dropped), or None."""
        while self._queue:
            job = self._queue.popleft()
            self._queued_texts -= len(job.texts)
            self.metrics.queue_depth.labels(model=self.model).set(self._queued_texts)
            if not job.future.done():
                return job
            self.skipped += 1
        return None

    async def _wait(self, timeout: float | None) -> bool:
        """Wait until a job is queued (or closing); False on timeout."""
        self._wakeup.clear()
        if self._queue or self._closing:
            return True
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def _gather(self) -> list[Job]:
        first = self._take()
        if first is None:
            return []
        jobs, n = [first], len(first.texts)
        if not self.settings.batching:
            return jobs
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_wait_ms / 1000
        while n < self.settings.max_batch_size:
            job = self._take()
            if job is None:
                left = deadline - loop.time()
                if self._closing or left <= 0 or not await self._wait(left):
                    break
                continue
            jobs.append(job)
            n += len(job.texts)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wait(None)
                continue
            jobs = await self._gather()
            groups: dict[Any, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.route.key, []).append(job)
            for group in groups.values():
                texts = [t for job in group for t in job.texts]
                self.metrics.batch_size.labels(model=self.model).observe(len(texts))
                try:
                    vectors = await loop.run_in_executor(
                        self._executor, self._encode, group[0].route, texts,
                        [n for job in group for n in job.lengths],
                    )
                except Exception as exc:  # every waiting request gets the failure
                    if not is_clients(exc):  # a request's own error is its answer alone
                        log.exception("encode failed for %d texts", len(texts))
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                start = 0
                for job in group:
                    end = start + len(job.texts)
                    if not job.future.done():
                        job.future.set_result(vectors[start:end])
                    start = end

    def _encode(self, route: Route, texts: list[str], lengths: list[int]) -> Any:
        import numpy as np

        from pe_core.model.batching import length_groups

        limit = self.settings.max_tokens or route.max_length
        out = np.empty((len(texts), route.encoder.dim), dtype=np.float32)
        for rows in length_groups(lengths):
            out[rows] = route.encoder.encode(
                [texts[i] for i in rows], **route.chosen,
                batch_size=self.settings.max_batch_size, max_length=limit,
                show_progress_bar=False,
            )
        return out
