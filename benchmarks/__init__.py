"""Benchmark scripts (run as ``python -m benchmarks.<name>``), the harness they share
and the renderer of their records."""
