"""What survives the gateway going away: queued async calls, deployments, and no stray processes.

The gateway is a real ``python -m runtime`` process, stopped with SIGKILL (a crash)
or SIGTERM (``ofc down``) and started again on the same state directory and port.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import ECHO_HANDLER, RunningGateway
from tests.helpers import alive, child_pids, read_proc, wait_until

pytestmark = pytest.mark.slow

T = TypeVar("T")

# Appends its body to $TOKENS_FILE as it starts, then works a while, so a queue
# drained by one worker has a call in flight and many waiting.
RECORDER_HANDLER = """
import os
import time

def handle(event, context):
    with open(os.environ["TOKENS_FILE"], "ab") as fh:
        fh.write(event.body + b"\\n")
    time.sleep(0.3)
    return "recorded"
"""

CALLS = 30

GatewayFactory = Callable[..., RunningGateway]


def replica_pids(gateway: RunningGateway) -> set[int]:
    """PIDs of the gateway's child processes that run a function (``index.py``)."""
    assert gateway.proc is not None
    children = child_pids(gateway.proc.pid)
    return {pid for pid in children if b"index.py" in read_proc(f"/proc/{pid}/cmdline")}


def end_gateway(gateway: RunningGateway, how: str) -> None:
    """Stop the gateway as a crash (``sigkill``) or ``ofc down`` (``sigterm``) would."""
    {"sigkill": gateway.kill, "sigterm": gateway.stop}[how]()


def tokens_in(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_gateway_stopped_by_signal_leaves_no_function_process(
    make_gateway: GatewayFactory, how: str
) -> None:
    gateway = make_gateway()
    gateway.deploy("echo", ECHO_HANDLER, labels={"com.openfaas.scale.min": "2"})
    gateway.wait_ready("echo", 2)
    pids = replica_pids(gateway)
    assert len(pids) == 2

    end_gateway(gateway, how)

    wait_until(
        lambda: not any(map(alive, pids)),
        3,
        lambda: f"still running: {[pid for pid in pids if alive(pid)]}",
    )


@pytest.mark.parametrize("how", ["sigkill", "sigterm"])
def test_gateway_restarted_after_signal_serves_deployed_function_without_redeploy(
    make_gateway: GatewayFactory, how: str
) -> None:
    gateway = make_gateway()
    gateway.deploy("echo", ECHO_HANDLER, labels={"com.openfaas.scale.min": "2"})
    gateway.wait_ready("echo", 2)
    end_gateway(gateway, how)

    gateway.start()

    gateway.wait_ready("echo", 2, timeout=30)
    assert [f["name"] for f in gateway.client.list_functions()] == ["echo"]
    response = gateway.client.invoke("echo", b"after restart")
    assert (response.status_code, response.json()["body"]) == (200, "after restart")


def test_sigkill_with_async_calls_queued_and_running_runs_every_call_after_restart(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = make_gateway(OFC_QUEUE_WORKERS="1")
    tokens_file = tmp_path / "tokens.txt"
    gateway.deploy("recorder", RECORDER_HANDLER, env_vars={"TOKENS_FILE": str(tokens_file)})
    pids = replica_pids(gateway)
    tokens = [f"token-{i:02d}" for i in range(CALLS)]
    for token in tokens:
        gateway.client.invoke_async("recorder", token.encode())
    wait_until(lambda: tokens_in(tokens_file), 10, "no async call started")

    gateway.kill()
    # The function dies with the gateway, so the file stops changing.
    wait_until(lambda: not any(map(alive, pids)), 3, "the function outlived the gateway")
    before_restart = tokens_in(tokens_file)
    assert len(before_restart) <= CALLS // 2, "too few calls were still queued to test anything"

    gateway.start()

    wait_until(
        lambda: set(tokens_in(tokens_file)) == set(tokens),
        40,
        lambda: f"never ran: {sorted(set(tokens) - set(tokens_in(tokens_file)))}",
    )

    def drained() -> dict[str, int] | None:
        counts: dict[str, int] = gateway.client.queue()["counts"]
        return counts if counts["queued"] == counts["running"] == 0 else None

    counts = wait_until(drained, 10, lambda: f"not drained: {gateway.client.queue()['counts']}")
    assert counts == {"queued": 0, "running": 0, "done": CALLS, "failed": 0}
    after = tokens_in(tokens_file)
    twice = {token for token in after if after.count(token) > 1}
    # At-least-once: only the call running at the kill (one worker: the last to start) may rerun.
    assert twice <= {before_restart[-1]}, (twice, before_restart)


SLOW_START_RECORDER = "import time\ntime.sleep(3)\n" + RECORDER_HANDLER


def test_queued_calls_wait_for_a_slow_starting_function_after_restart_instead_of_failing(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    # Three quick tries would all find the function not ready yet (it takes 3 s to
    # import): the retry window keeps the calls queued until it is back.
    gateway = make_gateway(
        OFC_QUEUE_WORKERS="1", OFC_ASYNC_MAX_ATTEMPTS="3", OFC_ASYNC_RETRY_WINDOW="30s"
    )
    tokens_file = tmp_path / "tokens.txt"
    gateway.deploy("slow", SLOW_START_RECORDER, env_vars={"TOKENS_FILE": str(tokens_file)})
    gateway.kill()
    gateway.start()
    tokens = [f"late-{i}" for i in range(3)]
    for token in tokens:
        gateway.client.invoke_async("slow", token.encode())

    wait_until(
        lambda: set(tokens_in(tokens_file)) == set(tokens),
        40,
        lambda: f"never ran: {gateway.client.queue()}",
    )
    assert gateway.client.queue()["counts"]["failed"] == 0
