"""The service's Prometheus metrics, in a registry of its own (several apps in one process, as
in the tests, never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the *_created series double the output and nobody here reads them

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Requests (by endpoint and status), their latency, the size of each batch predicted, the
    decisions given, and errors by kind (``photo``, ``validation``, ``too_large``, ``auth``,
    ``reload``, ``database``, ``internal``...)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pm_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("pm_request_seconds", "Time to answer a request", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("pm_batch_size", "Products predicted together (dynamic batching)",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.products = Counter("pm_products", "Products categorised", ["modality"], registry=self.registry)
        self.decisions = Counter("pm_decisions", "Answers by decision", ["decision"], registry=self.registry)
        self.errors = Counter("pm_errors", "Errors by kind", ["kind"], registry=self.registry)
        self.reloads = Counter("pm_model_reloads", "Model reloads by outcome", ["outcome"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
