"""Choosing a replica for a call, with at most ``concurrency`` calls in flight per replica.

Why a cap: a python3-http replica is waitress with a handful of threads. Handed 50
concurrent connections, its event loop polls every open connection in Python up to
three times per request, and its throughput behind a proxy fell to under half of what
the same load gets straight from a client. Keeping at most ``concurrency`` calls (16,
twice the template's threads) on each replica and queueing the rest here, first come
first served, keeps it at the throughput it has on its own (bench/results.json).

Shared by the synchronous endpoint and the async queue's workers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from itertools import count

from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.web import HttpError
from runtime.httpcore.upstream import UpstreamPool
from runtime.provider import Endpoint, Provider

# How often a queued call looks again for a free replica on its own, so that a
# replica that has just become ready (not only a finished call) lets it through.
RECHECK_INTERVAL = 0.1


class Invoker:
    """Admits calls to a function's replicas, taking turns, and records metrics."""

    def __init__(
        self,
        provider: Provider,
        pool: UpstreamPool,
        metrics: GatewayMetrics,
        *,
        concurrency: int = 16,
    ) -> None:
        self.provider = provider
        self.pool = pool
        self.metrics = metrics
        self.concurrency = concurrency
        self._turn = count()
        self._waiting: dict[str, deque[asyncio.Future[Endpoint]]] = {}

    def _endpoints(self, name: str) -> list[Endpoint]:
        endpoints = self.provider.endpoints(name)
        if endpoints is None:
            raise HttpError(404, f"function {name!r} not found")
        if not endpoints:
            raise HttpError(503, f"function {name!r} is not ready: no replica is available")
        return endpoints

    def _free(self, endpoints: list[Endpoint]) -> Endpoint | None:
        """The next replica in turn with room for another call."""
        n = len(endpoints)
        start = next(self._turn)
        for i in range(n):
            endpoint = endpoints[(start + i) % n]
            if endpoint.inflight < self.concurrency:
                return endpoint
        return None

    async def acquire(self, name: str, timeout: float) -> Endpoint:
        """A replica of ``name`` with this call counted in its ``inflight``.

        Raises :class:`HttpError`: 404 (not deployed), 503 (no ready replica), 504 (every
        replica stayed full for ``timeout`` seconds). Pair with :meth:`release`.
        """
        endpoints = self._endpoints(name)
        waiting = self._waiting.get(name)
        if not waiting:  # nobody queued ahead of this call
            endpoint = self._free(endpoints)
            if endpoint is not None:
                endpoint.inflight += 1
                return endpoint
        return await self._queue(name, timeout)

    async def _queue(self, name: str, timeout: float) -> Endpoint:
        loop = asyncio.get_running_loop()
        waiting = self._waiting.setdefault(name, deque())
        future: asyncio.Future[Endpoint] = loop.create_future()
        waiting.append(future)
        deadline = loop.time() + timeout
        admitted: Endpoint | None = None
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise HttpError(
                        504,
                        f"function {name!r} stayed busy for {timeout:g} s: every replica was full",
                    )
                done, _ = await asyncio.wait({future}, timeout=min(RECHECK_INTERVAL, remaining))
                if done:
                    admitted = future.result()
                    return admitted
                if waiting[0] is future:
                    endpoint = self._free(self._endpoints(name))
                    if endpoint is not None:
                        endpoint.inflight += 1
                        admitted = endpoint
                        return admitted
        finally:
            if not future.done():
                future.cancel()
            elif not future.cancelled() and future.result() is not admitted:
                # A slot was handed over just as this call gave up: pass it on.
                self.release(name, future.result())
            try:
                waiting.remove(future)
            except ValueError:
                pass
            if not waiting and self._waiting.get(name) is waiting:
                del self._waiting[name]

    def release(self, name: str, endpoint: Endpoint) -> None:
        """End a call admitted by :meth:`acquire`; its slot goes to the first queued call."""
        waiting = self._waiting.get(name)
        while waiting:
            future = waiting.popleft()
            if future.done():
                continue
            endpoints = self.provider.endpoints(name) or []
            if endpoint in endpoints:
                future.set_result(endpoint)  # hand the slot over: inflight stays counted
                return
            # This replica is leaving rotation: place the waiter on another one, if any.
            endpoint.inflight -= 1
            other = self._free(endpoints) if endpoints else None
            if other is None:
                waiting.appendleft(future)
            else:
                other.inflight += 1
                future.set_result(other)
            return
        endpoint.inflight -= 1
