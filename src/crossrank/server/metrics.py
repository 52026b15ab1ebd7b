"""Prometheus metrics for one server: requests, latency, pairs, batch sizes, queue depth, truncation.

Each app gets its own registry, so several apps in one process (tests, Ray replicas sharing a
worker) never collide on metric names. The micro-batcher's counters are read at scrape time
rather than pushed, so the scoring path carries no metrics cost beyond a few counter increments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from crossrank.errors import missing_extra
from crossrank.scoring.token_cache import TokenCacheInfo

# The routes we label by name; anything else (404s, fuzzers) is "other", keeping label sets bounded.
ROUTES = (
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/health",
    "/info",
    "/models",
    "/v1/models",
    "/metrics",
    "/docs",
    "/openapi.json",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True)
class LiveStats:
    """What the server is doing now, read at scrape time."""

    inflight: int = 0
    queued: int = 0
    groups: int = 0
    grouped: int = 0
    token_cache: TokenCacheInfo | None = None  # the documents' token cache, where the model keeps one


def route_label(path: str) -> str:
    """The route label of a path: itself for known routes, ``other`` for the rest."""
    return path if path in ROUTES else "other"


class Metrics:
    """The server's metrics, in a registry of their own; ``render()`` gives the exposition text."""

    def __init__(self, live: Callable[[], LiveStats]) -> None:
        try:
            import prometheus_client as prom
        except ImportError as exc:  # pragma: no cover - the server extra brings it
            raise missing_extra("prometheus-client", "server") from exc
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self.requests = prom.Counter(
            "crossrank_http_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = prom.Histogram(
            "crossrank_http_request_duration_seconds",
            "Time from request start to response end, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.pairs = prom.Counter("crossrank_pairs_scored", "(query, document) pairs scored", registry=self.registry)
        self.documents = prom.Histogram(
            "crossrank_request_documents",
            "Documents per rerank request (the request batch size)",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.truncated = prom.Counter(
            "crossrank_truncated_documents", "Documents cut to the model's max_length", registry=self.registry
        )
        self.rejected = prom.Counter(
            "crossrank_rejected_requests",
            "Requests refused before scoring, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(live))

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class _LiveCollector:
    """Gauges read at scrape time: in-flight requests, the micro-batcher's queue and its shared forward passes."""

    def __init__(self, read: Callable[[], LiveStats]) -> None:
        self._read = read

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        live = self._read()
        yield GaugeMetricFamily("crossrank_inflight_requests", "Rerank requests being served now", value=live.inflight)
        yield GaugeMetricFamily(
            "crossrank_queue_depth",
            "Scoring requests waiting for the micro-batcher's next forward group",
            value=live.queued,
        )
        yield CounterMetricFamily(
            "crossrank_forward_groups",
            "Micro-batched forward groups run (the pairs of several requests share one)",
            value=live.groups,
        )
        yield CounterMetricFamily(
            "crossrank_batched_requests", "Scoring requests served by those forward groups", value=live.grouped
        )
        tokens = live.token_cache
        if tokens is not None:
            yield CounterMetricFamily(
                "crossrank_token_cache_hits", "Documents whose token ids came from the token cache", value=tokens.hits
            )
            yield CounterMetricFamily(
                "crossrank_token_cache_misses", "Documents tokenized (then cached)", value=tokens.misses
            )
            yield GaugeMetricFamily(
                "crossrank_token_cache_entries", "Documents in the token cache", value=tokens.entries
            )
            yield GaugeMetricFamily("crossrank_token_cache_bytes", "Bytes the token cache holds", value=tokens.bytes)
