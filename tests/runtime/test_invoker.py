"""runtime.gateway.invoker: at most N calls in flight per replica, the rest queued in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from runtime.gateway.invoker import Invoker
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.web import HttpError
from runtime.httpcore.upstream import UpstreamPool
from runtime.provider import Endpoint
from tests.conftest import RunningGateway


class StubProvider:
    """Only what the invoker reads: the ready endpoints of each function."""

    def __init__(self, **functions: list[Endpoint]) -> None:
        self.functions = functions

    def endpoints(self, name: str) -> list[Endpoint] | None:
        return self.functions.get(name)


def make(concurrency: int, **functions: list[Endpoint]) -> Invoker:
    return Invoker(
        StubProvider(**functions), UpstreamPool(), GatewayMetrics(), concurrency=concurrency
    )  # type: ignore[arg-type]


def replica(i: int) -> Endpoint:
    return Endpoint("127.0.0.1", 10000 + i, f"fn-1-{i}")


def test_acquire_spreads_calls_over_replicas_up_to_the_cap() -> None:
    async def scenario() -> list[int]:
        a, b = replica(0), replica(1)
        invoker = make(2, fn=[a, b])
        for _ in range(4):
            await invoker.acquire("fn", 1)
        return [a.inflight, b.inflight]

    assert asyncio.run(scenario()) == [2, 2]


def test_acquire_beyond_the_cap_waits_and_release_hands_over_in_arrival_order() -> None:
    async def scenario() -> list[str]:
        only = replica(0)
        invoker = make(1, fn=[only])
        first = await invoker.acquire("fn", 1)
        order: list[str] = []

        async def call(label: str) -> None:
            endpoint = await invoker.acquire("fn", 5)
            order.append(label)
            await asyncio.sleep(0.01)
            invoker.release("fn", endpoint)

        tasks = [asyncio.create_task(call(label)) for label in ("second", "third", "fourth")]
        await asyncio.sleep(0.05)
        assert order == [] and only.inflight == 1  # all three queued behind the first
        invoker.release("fn", first)
        await asyncio.gather(*tasks)
        assert only.inflight == 0
        return order

    assert asyncio.run(scenario()) == ["second", "third", "fourth"]


def test_acquire_that_stays_queued_past_the_timeout_raises_504() -> None:
    async def scenario() -> HttpError:
        invoker = make(1, fn=[replica(0)])
        await invoker.acquire("fn", 1)
        with pytest.raises(HttpError) as err:
            await invoker.acquire("fn", 0.2)
        return err.value

    err = asyncio.run(scenario())
    assert err.status == 504
    assert "busy" in err.message


@pytest.mark.parametrize(
    ("functions", "status"),
    [({}, 404), ({"fn": []}, 503)],
    ids=["not-deployed", "no-ready-replica"],
)
def test_acquire_of_a_function_without_ready_replicas_raises(functions: dict, status: int) -> None:  # type: ignore[type-arg]
    async def scenario() -> int:
        with pytest.raises(HttpError) as err:
            await make(1, **functions).acquire("fn", 1)
        return err.value.status

    assert asyncio.run(scenario()) == status


def test_queued_call_is_admitted_when_a_new_replica_becomes_ready() -> None:
    async def scenario() -> Endpoint:
        first = replica(0)
        provider_endpoints = [first]
        invoker = make(1, fn=provider_endpoints)
        await invoker.acquire("fn", 1)
        waiter = asyncio.create_task(invoker.acquire("fn", 5))
        await asyncio.sleep(0.05)
        provider_endpoints.append(replica(1))  # no call finished: only the re-check can notice
        return await asyncio.wait_for(waiter, 2)

    assert asyncio.run(scenario()).replica_id == "fn-1-1"


def test_release_of_a_retired_replica_moves_the_queued_call_to_a_current_one() -> None:
    async def scenario() -> tuple[str, int]:
        old, new = replica(0), replica(1)
        endpoints = [old]
        invoker = make(1, fn=endpoints)
        held = await invoker.acquire("fn", 1)
        waiter = asyncio.create_task(invoker.acquire("fn", 5))
        await asyncio.sleep(0.01)
        endpoints[:] = [new]  # an update swapped the replicas; the old one drains
        invoker.release("fn", held)
        got = await asyncio.wait_for(waiter, 1)
        return got.replica_id, old.inflight

    assert asyncio.run(scenario()) == ("fn-1-1", 0)


def test_gateway_never_has_more_calls_in_a_replica_than_the_cap(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: RunningGateway = make_gateway(OFC_REPLICA_CONCURRENCY="2")
    gateway.deploy(
        "gauge",
        """
        import threading, time
        lock = threading.Lock()
        state = {"now": 0, "max": 0}

        def handle(event, context):
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            time.sleep(0.1)
            with lock:
                state["now"] -= 1
            return str(state["max"])
        """,
    )
    url = f"{gateway.url}/function/gauge"
    barrier = threading.Barrier(8)

    def call(_: int) -> tuple[int, str]:
        barrier.wait(5)
        response = requests.get(url, timeout=30)
        return response.status_code, response.text

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(8)))
    assert [status for status, _ in results] == [200] * 8
    assert max(int(text) for _, text in results) == 2


SLEEPER = """
import time

def handle(event, context):
    time.sleep(2)
    return "slept"
"""


def test_function_with_its_own_exec_timeout_outlives_the_gateway_default(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gateway: RunningGateway = make_gateway(OFC_UPSTREAM_TIMEOUT="1s")
    gateway.deploy("patient", SLEEPER, env_vars={"exec_timeout": "10s"})
    gateway.deploy("hasty", SLEEPER)
    assert requests.get(f"{gateway.url}/function/patient", timeout=30).text == "slept"
    assert requests.get(f"{gateway.url}/function/hasty", timeout=30).status_code == 504


def test_uploads_the_client_abandons_do_not_use_up_the_replicas_slots(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw: RunningGateway = make_gateway(OFC_REPLICA_CONCURRENCY="2")
    gw.deploy("sink", "def handle(event, context):\n    return str(len(event.body))\n")
    for _ in range(6):  # three times the cap: each would have kept a slot for good
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(
                b"POST /function/sink HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                b"400\r\n" + b"x" * 1024 + b"\r\n"
            )
            time.sleep(0.05)  # the gateway is streaming it on when the client goes away

    response = requests.post(f"{gw.url}/function/sink", data=b"abc", timeout=10)

    assert (response.status_code, response.text) == (200, "3")
    assert "Traceback" not in gw.log_path.read_text()
