"""Which pe errors are the client's: the one place a server decides 4xx or 500."""

from __future__ import annotations

from pe_core.errors import ArgumentTypeError, ConfigError, DataError, PEError, RequestError

CLIENT_CLOSED = 499  # nginx's code for a client that went away before the answer
# what a client did wrong when pe raises it for a request's values (an instruction too
# long for the Prompting LLM, an unknown prompt name): 422, not a server error
CLIENT_ERRORS = (ConfigError, ArgumentTypeError, DataError)


def http_error(exc: PEError) -> RequestError:
    """The HTTP answer to any pe error: the client's (422) or the server's (500).

    Example::

        http_error(ConfigError("unknown prompt_name 'x'")).status   # 422
    """
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, CLIENT_ERRORS):
        return RequestError(str(exc), status=422, code="invalid_input")
    return RequestError(f"{type(exc).__name__}: {exc}", status=500, type="server_error")


def is_clients(exc: BaseException) -> bool:
    """True for an error the request caused (no traceback in the server's log)."""
    return isinstance(exc, PEError) and http_error(exc).status < 500
