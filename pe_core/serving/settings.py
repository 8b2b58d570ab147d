"""What ``pe serve`` allows and how it batches: one validated dataclass whose fields are
also ``pe serve``'s flags (declared with :func:`pe_core.options.option`, as the training
settings are)."""

from __future__ import annotations

from dataclasses import dataclass

from pe_core.errors import ConfigError
from pe_core.options import SERVE, check_options, option

LOOPBACK = "127.0.0.1"
API_KEY_ENV = "PE_API_KEY"
LOG_LEVELS = ("debug", "info", "warning")


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
    * ``max_inputs``: texts per request (413 above it; 2,048 by default, above the 1,000
      LangChain sends at once); ``max_tokens``: tokens per text, special tokens included
      (None: the model's ``max_length``); a longer text is answered 413, or truncated
      with ``truncate=True`` (the response then carries an ``X-PE-Truncated`` header
      with the number of texts cut).
    * ``max_body_mb``: a larger request body is answered 413 before it is parsed.
    * ``request_timeout_s``: a request not answered by then gets 504.
    * ``strict_model``: answer 404 to a request naming another model than
      ``model_name`` (by default any name is answered, as TEI and infinity do).
    * ``api_key``: if set, ``/v1/*`` requires ``Authorization: Bearer <key>``.

    Example::

        ServeSettings(max_batch_size=64, batch_wait_ms=5, max_inputs=128)
    """

    host: str = option(LOOPBACK, help="address to bind", cli=SERVE, group="server")
    port: int = option(8080, help="port; 0 picks a free one", cli=SERVE, group="server",
                       ge=0, le=65535)
    model_name: str = option("pe", help="the model name /v1/models lists", cli=SERVE,
                             group="server", flag="--name", metavar="NAME")
    strict_model: bool = option(
        False, cli=SERVE, group="server",
        help="answer 404 to a request that names another model (default: any name is "
             "answered, with one warning in the log)")
    api_key: str | None = option(
        None, help="require this bearer key", cli=SERVE, group="server", metavar="KEY",
        default_text=f"default: ${API_KEY_ENV}, else none")
    max_batch_size: int = option(32, help="texts per forward pass", cli=SERVE,
                                 group="batching", gt=0, metavar="N")
    batch_wait_ms: float = option(0.0, help="how long the first request of a batch waits "
                                  "for more", cli=SERVE, group="batching", ge=0, metavar="MS")
    batching: bool = option(True, help="encode each request alone", cli=SERVE,
                            group="batching", flag="--no-batching")
    max_queue: int = option(4096, help="texts waiting at most; beyond it requests get 429",
                            cli=SERVE, group="limits", gt=0, metavar="N")
    max_inputs: int = option(2048, help="texts per request; beyond it 413", cli=SERVE,
                             group="limits", gt=0, metavar="N")
    max_tokens: int | None = option(
        None, help="tokens per text", cli=SERVE, group="limits", ge=1, metavar="N",
        default_text="default: the model's max_length")
    truncate: bool = option(False, help="truncate longer texts instead of answering 413",
                            cli=SERVE, group="limits")
    max_body_mb: float = option(64.0, help="request body size at most; beyond it 413",
                                cli=SERVE, group="limits", gt=0, metavar="MB")
    request_timeout_s: float = option(60.0, help="seconds before a request is answered 504",
                                      cli=SERVE, group="limits", gt=0,
                                      flag="--request-timeout", metavar="SECONDS")
    log_level: str = option("info", help="log level", cli=SERVE, group="logging",
                            choices=LOG_LEVELS)
    access_log: bool = option(True, help="no line per request (the metrics still count "
                              "them)", cli=SERVE, group="logging", flag="--no-access-log")

    def __post_init__(self) -> None:
        check_options(self)
        if self.max_inputs > self.max_queue:
            raise ConfigError(
                f"max_inputs ({self.max_inputs}) is larger than max_queue ({self.max_queue}):"
                " such a request could never be queued; raise --max-queue or lower "
                "--max-inputs"
            )
        if not self.model_name:
            raise ConfigError("model_name must not be empty: pass --name NAME")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)
