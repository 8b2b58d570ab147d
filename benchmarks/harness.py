"""What every benchmark script shares: the common flags and the one result record.

A script builds its parser with :func:`parser`, adds its own flags, and hands its
measuring function to :func:`run`, which applies ``--threads`` and ``--seed``, times the
call and stores what it returns as one record::

    {command, git_commit, dirty, machine: {cpu_model, flags, cores, threads},
     started, seconds, args, results}

at ``benchmarks/results/<benchmark>/<run>.json`` (``--name RUN``, default the start
time) or at ``--json OUT``. ``python -m benchmarks.render`` turns the records into the
docs' tables and plots, so a script writes no Markdown or PNG of its own.

Example::

    >>> p = parser("toy", threads=1)                                # doctest: +SKIP
    >>> p.add_argument("--steps", type=int, default=100)            # doctest: +SKIP
    >>> args = parse(p, argv, quick={"steps": 2})                   # doctest: +SKIP
    >>> run("toy", args, lambda a: {"ms_per_step": 12.5}, argv)     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECORD_FIELDS = ("command", "git_commit", "dirty", "machine", "started", "seconds", "args",
                 "results")

# the CPU features that change which kernels torch and onnxruntime pick (int8, bf16, wide
# vectors); a timing read without them cannot be compared with another machine's
_FLAG_PREFIXES = ("avx2", "avx512", "amx", "avx_vnni")
_UNSET = object()


def parser(description: str | None, *, threads: int | None = None, seed: int | None = 0,
           threads_help: str | None = None) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared flags; ``threads``/``seed`` are this
    script's defaults (None: leave torch's thread count / no seeding)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawTextHelpFormatter)
    shared = p.add_argument_group("shared by every benchmark")
    shared.add_argument("--json", metavar="OUT", type=Path,
                        help="write the record here instead of benchmarks/results/<bench>/")
    shared.add_argument("--name", metavar="RUN",
                        help="the record's file name under benchmarks/results/<bench>/ "
                             "(default: the start time)")
    shared.add_argument("--threads", type=int, default=threads,
                        help=threads_help or f"torch / onnxruntime threads (default: "
                                             f"{threads or 'all'})")
    shared.add_argument("--seed", type=int, default=seed, help="seed of python, numpy, torch")
    shared.add_argument("--quick", action="store_true",
                        help="a small configuration that checks the script runs, not a "
                             "measurement")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          quick: Mapping[str, Any] | None = None) -> argparse.Namespace:
    """Parse ``argv``; with ``--quick``, each flag of ``quick`` the command line did not
    give takes the value there (one it gave wins, even when it equals the default)."""
    quick = dict(quick or {})
    defaults = {key: p.get_default(key) for key in quick}
    p.set_defaults(**{key: _UNSET for key in quick})  # tells "not given" from "given"
    try:
        args = p.parse_args(argv)
    finally:
        p.set_defaults(**defaults)
    for key, value in quick.items():
        if getattr(args, key) is _UNSET:
            setattr(args, key, value if args.quick else defaults[key])
    return args


def run(benchmark: str, args: argparse.Namespace,
        measure: Callable[[argparse.Namespace], Any],
        argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Seed, set threads, call ``measure(args)``, store and return the record."""
    _seed(args.seed)
    _threads(args.threads)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    results = measure(args)
    rec = record(benchmark, args, results, started, time.perf_counter() - t0,
                 sys.argv[1:] if argv is None else argv)
    path = save(rec, result_path(benchmark, args, started))
    print(f"record: {path}", file=sys.stderr, flush=True)
    return rec


def record(benchmark: str, args: argparse.Namespace, results: Any, started: datetime,
           seconds: float, argv: Sequence[str]) -> dict[str, Any]:
    commit, dirty = git_state()
    return {
        "benchmark": benchmark,
        # run from the repository root with the project's environment active
        "command": shlex.join(["python", "-m", f"benchmarks.{benchmark}", *argv]),
        "git_commit": commit, "dirty": dirty,
        "machine": machine(args.threads),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "args": jsonable(vars(args)),
        "results": jsonable(results),
    }


def result_path(benchmark: str, args: argparse.Namespace, started: datetime) -> Path:
    if args.json:
        return Path(args.json)
    name = args.name or started.strftime("%Y%m%dT%H%M%SZ")
    return RESULTS / benchmark / f"{name}.json"


def save(rec: Mapping[str, Any], path: Path) -> Path:
    """Write through a temporary file: an interrupted write leaves the old record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    tmp.replace(path)
    return path


def git_state() -> tuple[str | None, bool | None]:
    """The checked-out commit and whether tracked files differ from it (None, None
    outside a git checkout)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, dirty


def machine(threads: int | None = None) -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:  # not Linux: the model name from platform, no flags
        pass
    if threads is None:
        try:
            import torch
            threads = torch.get_num_threads()
        except ImportError:
            threads = os.cpu_count()
    return {"cpu_model": model, "flags": sorted(f for f in flags if f.startswith(_FLAG_PREFIXES)),
            "cores": os.cpu_count(), "threads": threads}


def jsonable(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists (what json.dumps writes)."""
    return json.loads(json.dumps(value, default=str))


class NotARecord(ValueError):
    """A JSON file under ``benchmarks/results/`` that is no benchmark record."""


def load(root: Path = RESULTS) -> list[tuple[Path, dict[str, Any]]]:
    """Every record under ``root``, sorted by path; a file that is not a record (written
    by hand or by a script outside the harness) is an error naming it."""
    out = []
    for path in sorted(root.glob("*/*.json")):
        rec = json.loads(path.read_text())
        missing = [f for f in RECORD_FIELDS if not isinstance(rec, dict) or f not in rec]
        if missing:
            raise NotARecord(f"{path}: not a benchmark record (no {', '.join(missing)}); "
                             "write results through benchmarks.harness.run")
        out.append((path, rec))
    return out


def _seed(seed: int | None) -> None:
    if seed is None:
        return
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed)
        import torch
        torch.manual_seed(seed)
    except ImportError:
        pass


def _threads(threads: int | None) -> None:
    if threads is None:
        return
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        pass
