"""Run ``pe serve`` in a subprocess on a free loopback port, for tests and benchmarks.

Readiness is read from the server's own log lines (a reader thread collects stderr and
wakes waiters), so nothing polls or sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from pe_core.serving.settings import API_KEY_ENV

READY = re.compile(r"pe serve: model '(?P<name>[^']+)' ready")
LISTENING = re.compile(r"pe serve: listening on (?P<url>http://\S+)")
FAILED = re.compile(r"pe serve: could not load|pe: error:")
STOPPED = re.compile(
    r"answered (?P<answered>\d+) of (?P<accepted>\d+) accepted requests; "
    r"skipped (?P<skipped>\d+)"
)


class ServerProcess:
    """``pe serve --port 0 ARGS...``; ``start()`` returns once the model is ready.

    Example::

        with ServerProcess(["--backbone", "llama"]) as server:
            httpx.get(server.url + "/health").json()      # {"status": "ok", ...}
    """

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.args = ["serve", "--host", "127.0.0.1", "--port", "0", *args]
        # a key set in the caller's shell must not turn on auth behind a test's back
        inherited = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
        self.env = {**inherited, **(env or {})}
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pe_core.cli", *self.args], env=self.env, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(LISTENING, timeout)["url"]
        self.wait_for(READY, timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        self.proc.wait()  # reaped before waiters look, so they see that it exited
        with self._changed:  # EOF: the process is gone, wake every waiter
            self.lines.append("")
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float, nth: int = 1
                 ) -> re.Match[str]:
        """The ``nth`` log line matching ``pattern``; RuntimeError with the log if the
        server failed, exited or ``timeout`` passed first."""
        found: list[re.Match[str]] = []

        def done() -> bool:
            found[:] = [m for line in self.lines if (m := pattern.search(line)) is not None]
            if len(found) >= nth:
                return True
            exited = bool(self.lines) and self.lines[-1] == "" and self.proc is not None \
                and self.proc.poll() is not None
            return exited or any(FAILED.search(line) for line in self.lines)

        with self._changed:
            self._changed.wait_for(done, timeout)
        if len(found) < nth:
            log = "\n".join(self.lines[-40:])
            raise RuntimeError(f"pe serve logged {pattern.pattern!r} {len(found)} times, "
                               f"not {nth}:\n{log}")
        return found[nth - 1]

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)
