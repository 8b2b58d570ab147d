"""What ``pe serve`` allows and how it batches: one validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from pe_core.errors import ConfigError

LOOPBACK = "127.0.0.1"
API_KEY_ENV = "PE_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """Limits, batching and access of a server; every value is checked here.

    * ``max_batch_size``: texts per forward pass (``encode``'s ``batch_size``); the
      batcher gathers requests until they hold this many texts or ``batch_wait_ms``
      has passed since the first one arrived (0: takes what is queued, no waiting;
      under load that is what arrived during the previous batch).
    * ``batching=False`` encodes every request on its own (the benchmark's baseline).
    * ``max_queue``: texts waiting for the model; a request that does not fit is
      answered 429 at once.
    * ``max_inputs``: texts per request (413 above it); ``max_tokens``: tokens per text,
      special tokens included (None: the model's ``max_length``); a longer text is
      answered 413, or truncated with ``truncate=True`` (the response then carries an
      ``X-PE-Truncated`` header with the number of texts cut).
    * ``max_body_bytes``: a larger request body is answered 413 before it is parsed.
    * ``request_timeout_s``: a request not answered by then gets 504.
    * ``api_key``: if set, ``/v1/*`` requires ``Authorization: Bearer <key>``.

    Example::

        ServeSettings(max_batch_size=64, batch_wait_ms=5, max_inputs=128)
    """

    host: str = LOOPBACK
    port: int = 8080
    model_name: str = "pe"
    api_key: str | None = None
    max_batch_size: int = 32
    batch_wait_ms: float = 0.0
    batching: bool = True
    max_queue: int = 2048
    max_inputs: int = 512
    max_tokens: int | None = None
    truncate: bool = False
    max_body_bytes: int = 64 * 2**20
    request_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        positive = {
            "max_batch_size": self.max_batch_size, "max_queue": self.max_queue,
            "max_inputs": self.max_inputs, "request_timeout_s": self.request_timeout_s,
            "max_body_bytes": self.max_body_bytes,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        if self.batch_wait_ms < 0:
            raise ConfigError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.max_inputs > self.max_queue:
            raise ConfigError(
                f"max_inputs ({self.max_inputs}) is larger than max_queue ({self.max_queue}):"
                " such a request could never be queued; raise --max-queue or lower "
                "--max-inputs"
            )
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if not self.model_name:
            raise ConfigError("model_name must not be empty")
