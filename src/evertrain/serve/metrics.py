"""Prometheus metrics of one serving app.

Each app has its own ``CollectorRegistry`` so that several apps (tests, one process
serving twice) never collide in the global one. Label values are bounded: a model
label is only ever a registered model's name (unknown names are refused before they
are counted), versions are registry versions, arms are champion, canary and shadow.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Model time spans from sub-millisecond trees to multi-second language models.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Requests per model call: one (no batching happened) up to a full batch.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """The counters, histograms and gauges of ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "evertrain_requests",
            "Predict requests answered, by model, version and arm.",
            ["model", "version", "arm"],
            registry=r,
        )
        self.instances = Counter(
            "evertrain_instances",
            "Instances predicted, by model, version and arm.",
            ["model", "version", "arm"],
            registry=r,
        )
        self.errors = Counter(
            "evertrain_errors",
            "Requests refused or failed, by model, version, arm and kind "
            "(validation, too_large, model, fallback, shadow, feedback).",
            ["model", "version", "arm", "kind"],
            registry=r,
        )
        self.unknown_feedback_ids = Counter(
            "evertrain_feedback_unknown_ids",
            "Feedback labels whose request_id matches no logged prediction of the model "
            "(kept, but they can never join one).",
            ["model"],
            registry=r,
        )
        self.latency = Histogram(
            "evertrain_predict_latency_seconds",
            "Model time of one predict request (its wait in a batch included), by model, version and arm.",
            ["model", "version", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_latency = Histogram(
            "evertrain_request_latency_seconds",
            "Whole handling time of one predict request (parse, validate, route, predict, log), by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "evertrain_batch_requests",
            "Requests answered by one model call (adaptive batching), by model.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.logged_rows = Counter(
            "evertrain_logged_rows", "Rows written to a log, by log.", ["log"], registry=r
        )
        self.dropped_rows = Counter(
            "evertrain_dropped_rows",
            "Rows not logged because the log queue was full or the writer failed, by log.",
            ["log"],
            registry=r,
        )
        self.log_queue_rows = Gauge(
            "evertrain_log_queue_rows", "Rows waiting for the log writer.", registry=r
        )
        self.log_write_errors = Counter(
            "evertrain_log_write_errors", "Failed attempts to write a log part (each is retried).", registry=r
        )
        self.log_spooled_rows = Counter(
            "evertrain_log_spooled_rows",
            "Rows the log store would not take, kept in the local spool until it does, by log.",
            ["log"],
            registry=r,
        )
        self.log_drained_rows = Counter(
            "evertrain_log_drained_rows",
            "Spooled rows written to the log store once it answered again, by log.",
            ["log"],
            registry=r,
        )
        self.log_set_aside_rows = Counter(
            "evertrain_log_set_aside_rows",
            "Rows that cannot be stored at all (e.g. invalid Unicode), set aside with their reason, by log.",
            ["log"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "evertrain_shadow_dropped_requests",
            "Requests not mirrored to the shadow because its queue was full, by model.",
            ["model"],
            registry=r,
        )
        self.switches = Counter(
            "evertrain_model_switches",
            "Atomic switches of the version serving an arm.",
            ["model", "arm"],
            registry=r,
        )
        self.serving_version = Gauge(
            "evertrain_serving_version", "Version serving each arm (0: none).", ["model", "arm"], registry=r
        )
        self.canary_share = Gauge(
            "evertrain_canary_share", "Share of requests routed to the canary.", ["model"], registry=r
        )
        self.load_errors = Counter(
            "evertrain_model_load_errors",
            "Failed loads or warm-ups of a version.",
            ["model", "version"],
            registry=r,
        )
        self.refused = Counter(
            "evertrain_refused_requests",
            "Requests refused before reaching a model, by reason (overloaded, body_timeout, host, "
            "feedback_auth, content_type, client_limit).",
            ["reason"],
            registry=r,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    def answered(self, model: str, version: str, arm: str, n_instances: int, seconds: float) -> None:
        """Count one answered request (children cached: this runs on every request)."""
        key = (model, version, arm)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(*key),
                self.instances.labels(*key),
                self.latency.labels(*key),
            )
            self._children[key] = children
        children[0].inc()
        children[1].inc(n_instances)
        children[2].observe(seconds)

    def error(self, model: str, kind: str, version: str = "", arm: str = "") -> None:
        self.errors.labels(model, version, arm, kind).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
