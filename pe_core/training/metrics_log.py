"""``log.jsonl``: one JSON object per logged step or evaluation, appended as training
goes. On resume, lines past the checkpoint's step are dropped (they will be redone)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

LOG_NAME = "log.jsonl"


class MetricsLog:
    """Append-only JSONL metrics, written only by the main process.

    Example::

        log = MetricsLog(Path("runs/x/log.jsonl"))
        log.write({"step": 1, "loss": 2.3})
    """

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (atomically)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in read_log(self.path) if r.get("step", 0) <= step]
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".log.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in keep:
                fh.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)

    def reset(self) -> None:
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a ``log.jsonl`` (a torn last line from a crash is skipped)."""
    from pe_core.validate import decode_text

    out = []
    for line in decode_text(Path(path).read_bytes(), str(path)).splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):  # anything else was not written by MetricsLog
            out.append(record)
    return out
