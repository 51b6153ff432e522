"""Who owns which function: the gateway's function list, cached, so that the access
decision on a user's function costs a dict lookup and no round trip.

A user function ``<user>-<fn>`` may be reached at ``<user>.<domain>/<fn>`` only when
the list has it, its ``com.openfaas.cloud.git-owner`` label, lower-cased, is ``<user>``,
and it is not a platform function (label ``role: openfaas-system`` or
``openfaas-cloud: "1"``). The owner label, not the name, decides: user ``al`` with
function ``ice-hello`` and user ``al-ice`` with function ``hello`` are both deployed as
``al-ice-hello``, and only the owner of that deployment can reach it, at its own URL.

The list is refreshed in the background (``OFC_ROUTER_REFRESH_INTERVAL``) and on a miss:
a request for a name the list does not have waits for a refresh that *started after the
request arrived*, so a function deployed a moment ago is reachable at once. Refreshes
are single-flight (every waiter shares one) and start at most once per
``OFC_ROUTER_REFRESH_MIN_INTERVAL``, so a flood of unknown names costs the gateway one
listing per interval.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from router.config import Upstream
from router.metrics import RouterMetrics
from runtime.httpcore.streams import BodyError, BodyTooLarge
from runtime.httpcore.upstream import UpstreamError, UpstreamPool
from sdk.openfaas import is_platform_function

__all__ = ["FunctionCache", "GatewayLister", "ListingError", "OWNER_LABEL"]

log = logging.getLogger(__name__)

OWNER_LABEL = "com.openfaas.cloud.git-owner"
MAX_LISTING_BYTES = 64 * 1024 * 1024
USER_FILE = "basic-auth-user"
PASSWORD_FILE = "basic-auth-password"


class ListingError(Exception):
    """The function list could not be fetched; the message says why (never a credential)."""


Fetch = Callable[[], Awaitable[list[dict[str, Any]]]]


class GatewayLister:
    """Fetches ``GET /system/functions`` with the gateway's basic-auth credentials.

    The credential files are read when first needed and again after a 401, so the
    router may start before the gateway has generated them, and follows a rotation.
    """

    def __init__(
        self, pool: UpstreamPool, gateway: Upstream, secrets_dir: Path, *, timeout: float
    ) -> None:
        self.pool = pool
        self.gateway = gateway
        self.secrets_dir = secrets_dir
        self.timeout = timeout
        self._authorization: bytes | None = None

    def _credentials(self) -> bytes:
        try:
            user = (self.secrets_dir / USER_FILE).read_text().strip()
            password = (self.secrets_dir / PASSWORD_FILE).read_text().strip()
        except OSError as exc:
            raise ListingError(
                f"cannot read the gateway credentials in {self.secrets_dir}: "
                f"{exc.strerror or exc} (set OFC_ROUTER_GATEWAY_SECRETS_DIR)"
            ) from None
        return b"Basic " + base64.b64encode(f"{user}:{password}".encode())

    async def __call__(self) -> list[dict[str, Any]]:
        """The decoded function list; :class:`ListingError` when it cannot be had."""
        if self._authorization is None:
            self._authorization = self._credentials()
        status, body = await self._get()
        if status == 401:
            self._authorization = self._credentials()  # rotated since: read them again
            status, body = await self._get()
        if status != 200:
            raise ListingError(f"the gateway answered {status} to GET /system/functions")
        try:
            listing = json.loads(body)
        except ValueError as exc:
            raise ListingError(f"the gateway's function list is not JSON: {exc}") from None
        if not isinstance(listing, list):
            raise ListingError("the gateway's function list is not a JSON array")
        return listing

    async def _get(self) -> tuple[int, bytes]:
        assert self._authorization is not None
        headers = [(b"authorization", self._authorization), (b"accept", b"application/json")]
        try:
            response = await self.pool.request(
                self.gateway.host,
                self.gateway.port,
                "GET",
                self.gateway.prefix + b"/system/functions",
                headers,
                b"",
                timeout=self.timeout,
            )
        except UpstreamError as exc:
            raise ListingError(f"gateway {self.gateway.url}: {exc}") from None
        ok = False
        try:
            body = await response.body.read_all(MAX_LISTING_BYTES)
            ok = True
        except (BodyError, BodyTooLarge) as exc:
            raise ListingError(f"gateway {self.gateway.url}: function list: {exc}") from None
        finally:
            response.release(ok)
        return response.status, body


def index(listing: list[dict[str, Any]]) -> dict[str, str]:
    """Deployed name -> owner (lower case) of every function a user may reach."""
    owners: dict[str, str] = {}
    for item in listing:
        if not isinstance(item, dict):
            continue
        name = item.get("name")
        labels = item.get("labels") or {}
        if not isinstance(name, str) or not isinstance(labels, dict):
            continue
        if is_platform_function(labels):
            continue  # platform functions: only their explicit routes reach them
        owner = labels.get(OWNER_LABEL)
        if isinstance(owner, str) and owner:
            owners[name] = owner.lower()
    return owners


class FunctionCache:
    """The owners of reachable user functions, refreshed in the background and on a miss."""

    def __init__(
        self,
        fetch: Fetch,
        metrics: RouterMetrics,
        *,
        interval: float,
        min_interval: float,
    ) -> None:
        self.fetch = fetch
        self.metrics = metrics
        self.interval = interval
        self.min_interval = min_interval
        self._owners: dict[str, str] = {}
        self._users: frozenset[str] = frozenset()
        self.loaded_at: float | None = None  # monotonic time of the last good refresh
        self.last_error: str | None = None  # why the last refresh failed; None when it did not
        self._started = float("-inf")  # monotonic start of the last refresh
        self._running: asyncio.Future[None] | None = None
        self._pending: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None

    # -- queries (the hot path) -----------------------------------------------------------------
    def owner(self, name: str) -> str | None:
        """Owner (lower case) of reachable user function ``name``, or ``None``."""
        return self._owners.get(name)

    def has_user(self, user: str) -> bool:
        """True when ``user`` owns at least one reachable function."""
        return user in self._users

    @property
    def size(self) -> int:
        return len(self._owners)

    @property
    def loaded(self) -> bool:
        return self.loaded_at is not None

    # -- refreshing ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the list once (a gateway that is not up yet is only logged), then keep
        refreshing it every ``interval`` seconds."""
        await self.refreshed_since(time.monotonic(), "interval")
        self._loop_task = asyncio.ensure_future(self._every_interval())

    async def stop(self) -> None:
        for task in (self._loop_task, self._pending, self._running):
            if task is not None:
                task.cancel()
        for task in (self._loop_task, self._pending, self._running):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass  # stopping: the outcome of a refresh no longer matters

    async def refreshed_since(self, arrived: float, trigger: str = "miss") -> None:
        """Return once a refresh that started at or after ``arrived`` (monotonic) has ended,
        successfully or not; starts one when needed, sharing it with every other waiter."""
        while self._started < arrived:
            pending = self._pending
            if pending is None:
                pending = self._pending = asyncio.ensure_future(self._next(trigger))
            # Shielded: one waiter giving up must not cancel the refresh the others share.
            await asyncio.shield(pending)

    async def _next(self, trigger: str) -> None:
        """Wait for the refresh in flight and the minimum interval, then refresh."""
        try:
            if self._running is not None:
                await asyncio.shield(self._running)
            delay = self._started + self.min_interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self._pending = None  # requests arriving from now on need a later refresh
        self._started = time.monotonic()
        self._running = running = asyncio.ensure_future(self._refresh(trigger))
        try:
            await running
        finally:
            if self._running is running:
                self._running = None

    async def _refresh(self, trigger: str) -> None:
        try:
            owners = index(await self.fetch())
        except Exception as exc:  # any failure keeps the last good list, and is logged
            self.metrics.refresh(trigger, ok=False)
            if self.last_error != str(exc):  # once per distinct failure, not every 2 s
                if isinstance(exc, ListingError):
                    log.warning("cannot refresh the function list: %s", exc)
                else:
                    log.exception("cannot refresh the function list")
            self.last_error = str(exc)
            return
        self.metrics.refresh(trigger, ok=True)
        if self.last_error is not None:
            log.info("function list refreshed again (%d user functions)", len(owners))
        self.last_error = None
        self.loaded_at = time.monotonic()
        self._owners = owners
        self._users = frozenset(owners.values())

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refreshed_since(time.monotonic(), "interval")
