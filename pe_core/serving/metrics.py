"""Prometheus metrics of one server, in its own registry (so two apps in one process,
as in tests, never share counters)."""

from __future__ import annotations

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Counters, gauges and histograms ``/metrics`` exposes.

    * ``pe_requests_total{path, code}``: every HTTP request by answer code (errors are
      the 4xx/5xx codes);
    * ``pe_request_duration_seconds{path}``: latency histogram;
    * ``pe_batch_size{model}``: texts per batch the inference worker took (requests
      gathered together; it then encodes them in groups of similar length);
    * ``pe_queue_depth{model}``: texts waiting for the worker;
    * ``pe_inputs_total{model}``, ``pe_prompt_tokens_total{model}``: texts and tokens
      embedded;
    * ``pe_model_ready{model}``: 1 once the model is loaded.

    Example::

        metrics = Metrics()
        metrics.requests.labels(path="/v1/embeddings", code="200").inc()
        metrics.render()[0]                  # b"# HELP pe_requests_total ..."
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pe_requests", "HTTP requests by path and answer code",
                                ["path", "code"], registry=r)
        self.latency = Histogram("pe_request_duration_seconds", "HTTP request latency",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("pe_batch_size", "texts per batch the worker took",
                                    ["model"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("pe_queue_depth", "texts waiting for the inference worker",
                                 ["model"], registry=r)
        self.inputs = Counter("pe_inputs", "texts embedded", ["model"], registry=r)
        self.tokens = Counter("pe_prompt_tokens", "tokens embedded", ["model"], registry=r)
        self.ready = Gauge("pe_model_ready", "1 when the model is loaded", ["model"],
                           registry=r)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def observe_request(self, path: str, code: int, seconds: float) -> None:
        self.requests.labels(path=path, code=str(code)).inc()
        self.latency.labels(path=path).observe(seconds)
