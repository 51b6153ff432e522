"""``GET /healthz`` (200 once the gateway serves) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from runtime.gateway.metrics import GatewayMetrics
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider


def make_healthz_handler() -> Handler:
    async def healthz(request: Request) -> Response:
        return Response(200, [(b"content-type", b"text/plain; charset=utf-8")], b"OK\n")

    return healthz


def make_metrics_handler(provider: Provider, metrics: GatewayMetrics) -> Handler:
    async def metrics_endpoint(request: Request) -> Response:
        counts = [(s.deployment.service, s.available_replicas) for s in provider.list()]
        text = metrics.render(counts)
        return Response(200, [(b"content-type", b"text/plain; version=0.0.4")], text.encode())

    return metrics_endpoint
