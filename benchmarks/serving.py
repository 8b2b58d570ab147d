"""Serving throughput and latency: ``pe serve`` with and without dynamic batching, at
several client concurrencies, against a direct ``encode`` of the same texts.

Each mode starts its own ``pe serve`` subprocess on a free loopback port; clients are
asyncio tasks over keep-alive httpx connections, each sending requests back to back
(``--texts-per-request`` texts each, the local corpus' test queries and documents in
turn) until ``--requests`` have been answered per concurrency level. "direct" is
``model.encode`` of all the texts in this process at ``--max-batch-size`` (the most a
server can do: no HTTP, no JSON, every batch full) and at batch 1 (what a server without
batching does per request). Server and direct encode run with ``--threads`` torch
threads.

Any model: ``--backbone``/``--model``/``--prompting``/``--alignment`` as ``pe serve``
takes them, or ``--onnx FOLDER`` (an exported folder; direct encode then runs its
graph through onnxruntime).

Example::

    python -m benchmarks.serving                                  # toy default llama
    python -m benchmarks.serving --backbone llama --model pe-real:smollm2-135m --name real
    python -m benchmarks.serving --onnx onnx/ --name onnx
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from benchmarks import harness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = harness.parser(__doc__.splitlines()[0], threads=1, seed=None)
    p.add_argument("--backbone", default="llama")
    p.add_argument("--model")
    p.add_argument("--prompting")
    p.add_argument("--alignment")
    p.add_argument("--onnx", help="serve an exported folder instead (ONNX backend)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=256, help="answered per level")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--batch-wait-ms", type=float, default=0.0)
    return harness.parse(p, argv, quick={"concurrency": [1, 2], "requests": 8})


def model_args(args: argparse.Namespace) -> list[str]:
    if args.onnx:
        return ["--onnx", args.onnx]
    out = ["--backbone", args.backbone]
    for name in ("model", "prompting", "alignment"):
        if getattr(args, name):
            out += [f"--{name}", getattr(args, name)]
    return out


def workload(n: int) -> list[str]:
    from pe_core.data.corpus import load_pairs

    pairs = load_pairs("test")
    texts = [t for p in pairs for t in (p.query, p.document)]
    return [texts[i % len(texts)] for i in range(n)]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_encode(args: argparse.Namespace, texts: list[str]) -> dict[str, tuple[float, float]]:
    """(texts/s, CPU ms per text) of ``encode`` in this process at the server's batch
    size and at 1."""
    import torch

    torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.onnx:
            from pe_core.plugins import get_plugin_manager
            from pe_core.serving.backends import onnx_folders

            model = get_plugin_manager().exporters().get("onnx").load(onnx_folders(args.onnx)[0])
        else:
            import pe_core

            model = pe_core.load(backbone=args.backbone, model=args.model,
                                 prompting=args.prompting, alignment=args.alignment,
                                 allow_untrained=True)  # timings only
        model.encode(texts[:64], batch_size=args.max_batch_size)  # warm-up
        out = {}
        for batch in (args.max_batch_size, 1):
            start, cpu = time.perf_counter(), time.process_time()
            model.encode(texts, batch_size=batch, show_progress_bar=False)
            out[f"batch {batch}"] = (len(texts) / (time.perf_counter() - start),
                                     1000 * (time.process_time() - cpu) / len(texts))
    return out


async def drive(url: str, texts: list[str], concurrency: int, requests: int,
                per_request: int) -> tuple[float, list[float]]:
    """(texts/s, latencies in s) of ``requests`` requests from ``concurrency`` clients."""
    import httpx

    latencies: list[float] = []
    next_request = 0
    last = 0

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal next_request
        while next_request < last:
            i = next_request
            next_request += 1
            body = {"model": "pe", "input": [texts[(i * per_request + k) % len(texts)]
                                             for k in range(per_request)]}
            start = time.perf_counter()
            r = await c.post(url + "/v1/embeddings", json=body)
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                raise RuntimeError(f"{r.status_code}: {r.text}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as c:
        last = 2 * concurrency  # warm-up: open the connections
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        latencies.clear()
        next_request, last = 0, requests
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return requests * per_request / elapsed, latencies


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def serve_rows(args: argparse.Namespace, texts: list[str]) -> list[dict[str, Any]]:
    from pe_core.testing.server_process import ServerProcess

    rows = []
    env = {"OMP_NUM_THREADS": str(args.threads)}
    for batching in (True, False):
        flags = ["--max-batch-size", str(args.max_batch_size), "--batch-wait-ms",
                 str(args.batch_wait_ms), "--no-access-log",
                 "--max-queue", str(max(4096, args.requests * args.texts_per_request))]
        if not batching:
            flags.append("--no-batching")
        with ServerProcess(model_args(args) + flags, env=env) as server:
            for c in args.concurrency:
                cpu = process_cpu_s(server.proc.pid)
                tps, lat = asyncio.run(drive(server.url, texts, c, args.requests,
                                             args.texts_per_request))
                cpu = process_cpu_s(server.proc.pid) - cpu  # includes the warm-up
                n = (args.requests + 2 * c) * args.texts_per_request
                rows.append({"mode": "dynamic batching" if batching else "no batching",
                             "concurrency": c, "texts/s": tps,
                             "p50 ms": 1000 * statistics.median(lat),
                             "p99 ms": 1000 * percentile(lat, 99),
                             "cpu ms/text": 1000 * cpu / n})
                print(rows[-1], file=sys.stderr)
    return rows


def table(args: argparse.Namespace, rows: list[dict[str, Any]],
          direct: dict[str, tuple[float, float]], load: tuple[float, float],
          cores: int | None) -> str:
    what = f"--onnx {args.onnx}" if args.onnx else " ".join(model_args(args))
    lines = [
        f"`pe serve {what}`, {args.texts_per_request} text(s) per request, "
        f"{args.requests} requests per level, max batch {args.max_batch_size}, "
        f"batch wait {args.batch_wait_ms:g} ms, {args.threads} thread(s); machine load "
        f"average {load[0]:.1f} at the start, {load[1]:.1f} at the end "
        f"({cores} cores)",
        "",
        "| mode | clients | texts/s | p50 ms | p99 ms | texts/s vs direct (batch "
        f"{args.max_batch_size}) | server CPU ms/text |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, (tps, cpu) in direct.items():
        lines.append(f"| direct `encode`, {name} | – | {tps:.0f} | | | "
                     f"{tps / direct[f'batch {args.max_batch_size}'][0]:.2f}x | {cpu:.1f} |")
    best = direct[f"batch {args.max_batch_size}"][0]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['texts/s']:.0f} | "
                     f"{r['p50 ms']:.1f} | {r['p99 ms']:.1f} | {r['texts/s'] / best:.2f}x | "
                     f"{r['cpu ms/text']:.1f} |")
    return "\n".join(lines) + "\n"


def markdown(results: dict[str, Any], args: dict[str, Any]) -> str | None:
    """For ``python -m benchmarks.render``: the table of one record (None for a record
    in another shape)."""
    if "direct" not in results:
        return None
    full = argparse.Namespace(**{**vars(parse_args([])), **args})
    direct = {k: (v["texts_per_s"], v["cpu_ms_per_text"]) for k, v in results["direct"].items()}
    return table(full, results["rows"], direct, tuple(results["load_average"]),
                 results["cores"])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = workload(max(512, args.requests * args.texts_per_request))
    load_start = os.getloadavg()[0]  # other work on the machine moves wall-clock rows
    direct = direct_encode(args, texts)
    print(f"direct encode: {direct}", file=sys.stderr)
    rows = serve_rows(args, texts)
    results = {"direct": {k: {"texts_per_s": tps, "cpu_ms_per_text": cpu}
                          for k, (tps, cpu) in direct.items()},
               "rows": rows, "load_average": [load_start, os.getloadavg()[0]],
               "cores": os.cpu_count()}
    print(markdown(results, vars(args)))
    return results


def main(argv: list[str] | None = None) -> None:
    harness.run("serving", parse_args(argv), measure, argv)


if __name__ == "__main__":
    main()
