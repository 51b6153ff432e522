"""Workers that drain the durable queue of async calls.

A call runs with POST against a ready replica (as OpenFaaS's queue-worker does), with
the stored headers and body, under ``timeout``. Whatever the function answers, even a
5xx, completes the call: that is the function's own result. A function that cannot be
reached (not deployed yet, no ready replica, connection refused) is retried with
exponential back-off; after ``max_attempts`` tries, and no sooner than ``retry_window``
seconds after it was queued, the call is parked as ``failed``, where
``ofc queue`` shows it and ``ofc queue retry`` brings it back.
"""

from __future__ import annotations

import asyncio
import logging
import time

import requests

from runtime.gateway.invoker import Invoker
from runtime.gateway.web import HttpError
from runtime.httpcore.upstream import UpstreamError, UpstreamTimeout
from runtime.queue.store import CallStore, QueuedCall

log = logging.getLogger(__name__)

CALLBACK_ATTEMPTS = 3
MAX_RESULT_BYTES = 64 * 1024 * 1024
_CALLBACK_DROP = {"connection", "keep-alive", "transfer-encoding", "content-length", "trailer"}


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): 0.5, 1, 2 ... 30."""
    return min(0.5 * 2 ** (attempt - 1), 30.0)


class QueueWorkers:
    """A pool of ``workers`` tasks claiming calls from ``store``."""

    def __init__(
        self,
        store: CallStore,
        invoker: Invoker,
        *,
        workers: int,
        timeout: float,
        max_attempts: int,
        retry_window: float = 120.0,
    ) -> None:
        self.store = store
        self.invoker = invoker
        self.workers = workers
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_window = retry_window
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session = requests.Session()

    async def start(self) -> None:
        """Put calls a crash interrupted back in the queue, then start the workers."""
        restored = self.store.requeue_interrupted()
        if restored:
            log.info("requeued %d async calls interrupted by the last stop", restored)
        self._tasks = [asyncio.create_task(self._run(i)) for i in range(self.workers)]

    async def close(self) -> None:
        """Stop the workers; a call still running stays 'running' and is requeued at next start."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._session.close()

    def wake(self) -> None:
        """Tell idle workers there is work (called after each enqueue)."""
        self._wakeup.set()

    async def _run(self, index: int) -> None:
        while True:
            call = self.store.claim(time.time())
            if call is None:
                due = self.store.next_due()
                wait = None if due is None else max(0.0, due - time.time())
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                except TimeoutError:
                    pass
                continue
            try:
                await self._process(call)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "async call %s to %s failed unexpectedly", call.call_id, call.function
                )
                self.store.fail(call.call_id, "internal error in the queue worker")

    async def _process(self, call: QueuedCall) -> None:
        started = time.monotonic()
        try:
            endpoint = await self.invoker.acquire(call.function, self.timeout)
        except HttpError as exc:
            self._unreachable(call, exc.message)
            return
        target = call.path.encode("latin-1") or b"/"
        if call.query:
            target += b"?" + call.query.encode("latin-1")
        headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in call.headers]
        headers.append((b"user-agent", b"ofc-queue-worker"))
        try:
            upstream = await self.invoker.pool.request(
                endpoint.host,
                endpoint.port,
                "POST",
                target,
                headers,
                call.body,
                timeout=self.timeout,
            )
            try:
                result = await upstream.body.read_all(MAX_RESULT_BYTES)
                upstream.release(True)
            except BaseException:
                upstream.release(False)
                raise
        except UpstreamTimeout:
            duration = time.monotonic() - started
            self.invoker.metrics.observe(call.function, 504, duration)
            self.store.complete(call.call_id, 504, duration)
            log.warning(
                "async call %s to %s timed out after %.0f s", call.call_id, call.function, duration
            )
            await self._callback(call, 504, [], b"function timed out\n", duration)
            return
        except UpstreamError as exc:
            self._unreachable(call, str(exc))
            return
        finally:
            self.invoker.release(call.function, endpoint)
        duration = time.monotonic() - started
        self.invoker.metrics.observe(call.function, upstream.status, duration)
        self.store.complete(call.call_id, upstream.status, duration)
        log.info(
            "async call %s to %s finished with %d in %.3f s",
            call.call_id,
            call.function,
            upstream.status,
            duration,
        )
        await self._callback(call, upstream.status, upstream.headers, result, duration)

    def _unreachable(self, call: QueuedCall, reason: str) -> None:
        # Park only after max_attempts tries AND retry_window seconds in the queue: a
        # function that is still coming back (after a restart, or installing its
        # requirements) must not lose the calls that were waiting for it.
        waited = time.time() - call.enqueued_at
        if call.attempts >= self.max_attempts and waited >= self.retry_window:
            self.store.fail(call.call_id, f"gave up after {call.attempts} attempts: {reason}")
            log.warning(
                "async call %s to %s parked as failed: %s", call.call_id, call.function, reason
            )
            return
        delay = backoff(call.attempts)
        self.store.retry_later(call.call_id, reason, delay)
        log.info(
            "async call %s to %s: %s; retry %d/%d in %.1f s",
            call.call_id,
            call.function,
            reason,
            call.attempts,
            self.max_attempts,
            delay,
        )

    async def _callback(
        self,
        call: QueuedCall,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        duration: float,
    ) -> None:
        if not call.callback_url:
            return
        out = {
            n.decode("latin-1"): v.decode("latin-1")
            for n, v in headers
            if n.decode("latin-1") not in _CALLBACK_DROP
        }
        out.update(
            {
                "X-Call-Id": call.call_id,
                "X-Function-Status": str(status),
                "X-Duration-Seconds": f"{duration:f}",
                "X-Function-Name": call.function,
            }
        )
        url = call.callback_url
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            try:
                resp = await asyncio.to_thread(
                    self._session.post, url, data=body, headers=out, timeout=30
                )
                if resp.status_code < 500:
                    return
                reason = f"callback answered {resp.status_code}"
            except requests.RequestException as exc:
                reason = f"callback failed: {type(exc).__name__}"
            log.warning("async call %s: %s (attempt %d)", call.call_id, reason, attempt)
            await asyncio.sleep(backoff(attempt))
