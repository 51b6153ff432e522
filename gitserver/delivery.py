"""Delivering push events to github-event, signed as GitHub signs its webhooks.

Deliveries leave in the order pushes happened, one at a time, from a queue a push only
appends to: the push's answer never waits for the pipeline. A delivery that fails (no
connection, a timeout, a 5xx or 429) is retried :data:`RETRIES` times, waiting
``retry_delay`` seconds and then twice as long each time, under the same
``X-GitHub-Delivery`` id, as GitHub redelivers (github-event drops a delivery id it has
handled, so a retry of a delivery that did arrive starts nothing twice). Other answers
are final. An event that is not delivered in the end is logged as an error: the push
itself has landed, and pushing again (or ``git commit --allow-empty``) sends a new event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import requests

from sdk.signing import GITHUB_SHA256, sign

__all__ = ["Delivery", "EventSender", "RETRIES"]

log = logging.getLogger(__name__)

RETRIES = 3
USER_AGENT = "ofc-git-remote"
_RETRY_STATUSES = {429} | set(range(500, 600))


@dataclass(frozen=True)
class Delivery:
    """One signed event, ready to send."""

    body: bytes
    headers: dict[str, str]
    summary: str  # for log lines: "alice/fns refs/heads/main 1a2b3c4d5e6f"
    delivery_id: str


class EventSender:
    """Sends events to ``<gateway_url>/function/github-event`` in the background."""

    def __init__(
        self, gateway_url: str, webhook_secret: str, *, retry_delay: float, timeout: float
    ) -> None:
        self.url = f"{gateway_url}/function/github-event"
        self._secret = webhook_secret
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self.session = requests.Session()
        self._worker: asyncio.Task[None] | None = None

    def make(self, event: str, payload: dict[str, Any], summary: str) -> Delivery:
        """``payload`` as GitHub would deliver it: JSON, signed, with a new delivery id."""
        body = json.dumps(payload).encode()
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id,
            GITHUB_SHA256: sign(body, self._secret),
        }
        return Delivery(body, headers, summary, delivery_id)

    def send(self, delivery: Delivery) -> None:
        """Queue ``delivery``; it leaves after every one queued before it."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        self.queue.put_nowait(delivery)

    async def close(self, grace: float) -> None:
        """Let queued deliveries go out for up to ``grace`` seconds; log the rest as lost."""
        if self._worker is not None:
            try:
                await asyncio.wait_for(self.queue.join(), grace)
            except TimeoutError:
                pass
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        while not self.queue.empty():
            lost = self.queue.get_nowait()
            log.error("push event %s (delivery %s) NOT delivered: the git server stopped first",
                      lost.summary, lost.delivery_id)  # fmt: skip
        self.session.close()

    async def _run(self) -> None:
        while True:
            delivery = await self.queue.get()
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                log.error("push event %s (delivery %s) NOT delivered: the git server stopped first",
                          delivery.summary, delivery.delivery_id)  # fmt: skip
                raise
            except Exception:
                log.exception("push event %s (delivery %s) NOT delivered",
                              delivery.summary, delivery.delivery_id)  # fmt: skip
            finally:
                self.queue.task_done()

    async def _deliver(self, delivery: Delivery) -> None:
        delay = self.retry_delay
        for attempt in range(1, RETRIES + 2):
            problem = await asyncio.to_thread(self._attempt, delivery)
            if problem is None:
                return
            final = attempt > RETRIES or not problem.retry
            if final:
                log.error(
                    "push event %s (delivery %s) NOT delivered to %s after %d attempt(s): %s; "
                    "the push is stored but will not be built until the next push",
                    delivery.summary, delivery.delivery_id, self.url, attempt, problem.reason,
                )  # fmt: skip
                return
            log.warning("push event %s (delivery %s): attempt %d failed (%s); retrying in %g s",
                        delivery.summary, delivery.delivery_id, attempt, problem.reason, delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay *= 2

    def _attempt(self, delivery: Delivery) -> _Problem | None:
        try:
            response = self.session.post(
                self.url, data=delivery.body, headers=delivery.headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            return _Problem(f"{type(exc).__name__}: cannot reach {self.url}", retry=True)
        answer = response.text.strip()[:200]
        if 200 <= response.status_code < 300:
            log.info("push event %s (delivery %s) delivered: %d %s", delivery.summary,
                     delivery.delivery_id, response.status_code, answer)  # fmt: skip
            return None
        return _Problem(
            f"github-event answered {response.status_code} {answer}",
            retry=response.status_code in _RETRY_STATUSES,
        )


@dataclass(frozen=True)
class _Problem:
    reason: str
    retry: bool
