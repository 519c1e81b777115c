"""What `htp serve` reports about itself: Prometheus metrics at `GET /metrics` (prometheus-client) and, when
`serve.access_log` is on, one JSON line per request on the `htp.access` logger. Requests are counted by endpoint
(a fixed set of names, so a client cannot grow the label space) and status, refused ones included."""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENDPOINTS = ("/search", "/documents", "/info", "/health", "/reload", "/metrics", "/v1/embeddings", "/openapi.json", "/")
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
access = logging.getLogger("htp.access")


def endpoint_of(path: str) -> str:
    """The endpoint a path belongs to (`/documents/a/b` -> `/documents`), or `other`."""
    for name in ENDPOINTS:
        if path == name or (name not in ("/", "/search") and path.startswith(name + "/")):
            return name
    return "other"


class Observer:
    """The service's metrics, in a registry of its own (one per app, so several apps in one process do not mix)."""

    def __init__(self, access_log: bool) -> None:
        self.registry = CollectorRegistry()
        self.access_log = access_log
        self.requests = Counter(
            "htp_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "htp_request_seconds",
            "Time to answer a request, by endpoint",
            ["endpoint"],
            buckets=SECONDS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "htp_batch_queries",
            "Queries per micro-batch (one forward pass)",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.forward = Histogram(
            "htp_forward_seconds", "Encoder forward-pass time per micro-batch", buckets=SECONDS, registry=self.registry
        )
        self.version = Gauge(
            "htp_index_version", "The live index version (value 1)", ["version"], registry=self.registry
        )
        self.documents = Gauge("htp_index_documents", "Documents in the live index version", registry=self.registry)

    def render(self, version: str, documents: int) -> bytes:
        """The Prometheus text exposition, with the live version's facts set first."""
        self.version.clear()
        self.version.labels(version).set(1)
        self.documents.set(documents)
        return generate_latest(self.registry)

    def around(self, app: ASGIApp) -> ASGIApp:
        """An ASGI layer counting and timing every HTTP request `app` answers (and logging it when asked)."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            began, status = time.perf_counter(), [500]

            async def sending(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                seconds = time.perf_counter() - began
                endpoint = endpoint_of(scope["path"])
                self.requests.labels(endpoint, str(status[0])).inc()
                self.latency.labels(endpoint).observe(seconds)
                if self.access_log:  # the path only: query strings carry users' queries
                    client = (scope.get("client") or ("", 0))[0]
                    access.info(
                        json.dumps(
                            {
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                "client": client,
                                "method": scope["method"],
                                "path": scope["path"],
                                "status": status[0],
                                "ms": round(1000 * seconds, 1),
                            }
                        )
                    )

        return observed
