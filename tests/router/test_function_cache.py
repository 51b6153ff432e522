"""The router's cached function list: who may reach what, and when it is refreshed.

Driven on an event loop with a stand-in for the gateway's listing, so the number of
listings the gateway would serve can be counted exactly.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from router.functions import FunctionCache, ListingError, index
from router.metrics import RouterMetrics

OWNER = "com.openfaas.cloud.git-owner"


def fn(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": labels, "replicas": 1}


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        ([fn("alice-hello", **{OWNER: "Alice"})], {"alice-hello": "alice"}),
        ([fn("hello")], {}),
        ([fn("github-event", role="openfaas-system", **{OWNER: "x"})], {}),
        ([fn("alice-x", **{"openfaas-cloud": "1", OWNER: "alice"})], {}),
        ([fn("al-ice-hello", **{OWNER: "al"})], {"al-ice-hello": "al"}),
        ([{"name": "odd", "labels": None}, "not-an-object", {"labels": {}}], {}),
    ],
    ids=["owner-lower-cased", "no-owner", "platform-role", "platform-flag", "owner-decides",
         "malformed-entries"],
)  # fmt: skip
def test_index_keeps_only_users_functions_with_their_owner(
    listing: list[Any], expected: dict[str, str]
) -> None:
    assert index(listing) == expected


class Listing:
    """A gateway listing stand-in: counts calls; each takes ``delay`` seconds."""

    def __init__(self, delay: float = 0.05) -> None:
        self.functions: list[dict[str, Any]] = []
        self.calls = 0
        self.delay = delay
        self.fail = False

    async def __call__(self) -> list[dict[str, Any]]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ListingError("gateway http://127.0.0.1:1: cannot connect")
        return list(self.functions)


def cache_for(listing: Listing, min_interval: float = 0.2) -> FunctionCache:
    return FunctionCache(listing, RouterMetrics(), interval=3600.0, min_interval=min_interval)


def test_function_cache_sees_a_function_deployed_after_the_last_refresh_on_a_miss() -> None:
    listing = Listing()

    async def scenario() -> str | None:
        cache = cache_for(listing, min_interval=0.0)
        await cache.start()
        listing.functions.append(fn("alice-new", **{OWNER: "alice"}))
        await cache.refreshed_since(time.monotonic())
        owner = cache.owner("alice-new")
        await cache.stop()
        return owner

    assert asyncio.run(scenario()) == "alice"


def test_function_cache_shares_one_refresh_among_concurrent_misses() -> None:
    listing = Listing()

    async def scenario() -> int:
        cache = cache_for(listing, min_interval=0.0)
        await cache.start()
        before = listing.calls
        arrived = time.monotonic()
        await asyncio.gather(*(cache.refreshed_since(arrived) for _ in range(50)))
        await cache.stop()
        return listing.calls - before

    assert asyncio.run(scenario()) == 1


def test_function_cache_miss_during_a_refresh_waits_for_one_that_started_after_it() -> None:
    listing = Listing(delay=0.2)

    async def scenario() -> tuple[int, str | None]:
        cache = cache_for(listing, min_interval=0.0)
        await cache.start()
        before = listing.calls
        first = asyncio.ensure_future(cache.refreshed_since(time.monotonic()))
        await asyncio.sleep(0.05)  # the first refresh is in flight, listing the old set
        listing.functions.append(fn("alice-late", **{OWNER: "alice"}))
        await cache.refreshed_since(time.monotonic())
        await first
        owner = cache.owner("alice-late")
        await cache.stop()
        return listing.calls - before, owner

    assert asyncio.run(scenario()) == (2, "alice")


def test_function_cache_starts_refreshes_at_most_once_per_min_interval() -> None:
    listing = Listing(delay=0.0)

    async def scenario() -> int:
        cache = cache_for(listing, min_interval=0.2)
        await cache.start()
        before = listing.calls
        deadline = time.monotonic() + 0.5
        rounds = 0
        while time.monotonic() < deadline and rounds < 1000:
            await cache.refreshed_since(time.monotonic())
            rounds += 1
        await cache.stop()
        return listing.calls - before

    # 0.5 s of back-to-back misses: at most one refresh per 0.2 s (+1 for the boundary).
    assert asyncio.run(scenario()) <= 3


def test_function_cache_keeps_the_last_list_when_a_refresh_fails() -> None:
    listing = Listing()
    listing.functions.append(fn("alice-hello", **{OWNER: "alice"}))

    async def scenario() -> tuple[str | None, str | None]:
        cache = cache_for(listing, min_interval=0.0)
        await cache.start()
        listing.fail = True
        await cache.refreshed_since(time.monotonic())
        result = cache.owner("alice-hello"), cache.last_error
        await cache.stop()
        return result

    owner, error = asyncio.run(scenario())
    assert owner == "alice"
    assert error is not None and "cannot connect" in error
