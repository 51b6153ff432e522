"""Function lifecycle in a real ``python -m runtime``: readiness, update, crash, scale, remove, env.

Every test drives the gateway over loopback HTTP and checks what a user would notice:
the answers of ``/function/<name>``, the function's logs, and the OS processes the
process provider runs (children of the gateway, found through ``/proc``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
import requests

from tests.conftest import ECHO_HANDLER, RunningGateway
from tests.helpers import alive, child_pids, read_proc, wait_until

pytestmark = pytest.mark.slow

T = TypeVar("T")
Answers = list[tuple[int, str]]  # (status, body) in order; status 0: connection error

V1_HANDLER = """
def handle(event, context):
    return "v1"
"""

# The import takes a second: a real window in which the new version is starting and
# the old one must keep answering.
V2_SLOW_START_HANDLER = """
import time

time.sleep(1)

def handle(event, context):
    return "v2"
"""

RAISES_AT_IMPORT_HANDLER = """
raise RuntimeError("broken on purpose")

def handle(event, context):
    return "v2"
"""

SLOW_IMPORT_HANDLER = """
import time

time.sleep(2)

def handle(event, context):
    return "ready"
"""

SLOW_PATH_HANDLER = """
import time

def handle(event, context):
    if event.path == "/slow":
        print("slow call started")
        time.sleep(3)
    return "v1"
"""

CRASH_HANDLER = """
import os

def handle(event, context):
    if event.path == "/crash":
        os._exit(1)
    return str(os.getpid())
"""

# Starts a helper process, as a function wrapping a CLI tool might.
HELPER_HANDLER = """
import os
import subprocess

helper = subprocess.Popen(["sleep", "60"])

def handle(event, context):
    if event.path == "/crash":
        os._exit(1)
    return {"statusCode": 200, "body": {"pid": os.getpid(), "helper": helper.pid}}
"""

ENVIRON_HANDLER = """
import os

def handle(event, context):
    return {"statusCode": 200, "body": dict(os.environ)}
"""

MISSING_REQUIREMENT = "this-package-does-not-exist-ofc==0.0.1\n"


# -- helpers ---------------------------------------------------------------------------------------
def replica_processes(gateway: RunningGateway, function: str | None = None) -> dict[int, dict]:
    """The gateway's child processes running ``index.py``: PID -> their environment.

    Only replicas of ``function`` when given (HOSTNAME is ``<function>-<version>-<index>``).
    """
    assert gateway.proc is not None
    found = {}
    for pid in child_pids(gateway.proc.pid):
        if b"index.py" not in read_proc(f"/proc/{pid}/cmdline"):
            continue
        entries = read_proc(f"/proc/{pid}/environ").decode().split("\0")
        environ = dict(entry.partition("=")[::2] for entry in entries if entry)
        if function is None or environ.get("HOSTNAME", "").rsplit("-", 2)[0] == function:
            found[pid] = environ
    return found


def hostnames(gateway: RunningGateway) -> list[str]:
    return sorted(env["HOSTNAME"] for env in replica_processes(gateway).values())


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def log_texts(gateway: RunningGateway, name: str) -> list[str]:
    return [record["text"] for record in gateway.client.logs(name)]


@contextmanager
def load(url: str, *, threads: int = 3, limit: float = 20.0) -> Iterator[list[Answers]]:
    """Call ``url`` in a loop from ``threads`` threads, each with its own keep-alive session.

    Yields one :data:`Answers` list per thread, filled as answers arrive. The threads
    stop when the block ends or after ``limit`` seconds, whichever comes first.
    """
    stop = threading.Event()
    results: list[Answers] = [[] for _ in range(threads)]
    deadline = time.monotonic() + limit

    def run(answers: Answers) -> None:
        with requests.Session() as session:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    response = session.get(url, timeout=10)
                    answers.append((response.status_code, response.text))
                except requests.RequestException as exc:
                    answers.append((0, repr(exc)))

    workers = [threading.Thread(target=run, args=(answers,), daemon=True) for answers in results]
    for worker in workers:
        worker.start()
    try:
        yield results
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)


def invoke_until_200(gateway: RunningGateway, name: str, timeout: float) -> Answers:
    """GET ``name`` until it answers 200; returns every answer, the 200 last.

    GET: a call the gateway may send again when a replica closes without answering.
    """
    answers: Answers = []

    def served() -> bool:
        response = gateway.client.invoke(name, method="GET")
        answers.append((response.status_code, response.text))
        return response.status_code == 200

    wait_until(served, timeout, lambda: f"{name} never answered 200: {answers[-3:]}")
    return answers


# -- readiness -------------------------------------------------------------------------------------
def test_invoke_before_health_check_passes_answers_503_not_ready_until_200(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("slow-import", SLOW_IMPORT_HANDLER, wait=False)

    answers = invoke_until_200(gateway, "slow-import", 30)

    status, text = answers[0]
    assert status == 503 and "not ready" in text
    assert {status for status, _ in answers[:-1]} == {503}
    assert answers[-1] == (200, "ready")


# -- update ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("replicas", [1, 2], ids=["one-replica", "two-replicas"])
def test_update_under_load_switches_to_new_version_without_a_failed_request(
    gateway: RunningGateway, replicas: int
) -> None:
    labels = {"com.openfaas.scale.min": str(replicas)}
    gateway.deploy("versioned", V1_HANDLER, labels=labels)
    gateway.wait_ready("versioned", replicas)

    with load(f"{gateway.url}/function/versioned") as results:
        wait_until(lambda: all(results), 10, "the load got no answer")
        gateway.deploy("versioned", V2_SLOW_START_HANDLER, wait=False, labels=labels)
        # Each thread sees v2 a few times, so the switch has stuck.
        wait_until(
            lambda: all([body for _, body in answers].count("v2") >= 5 for answers in results),
            30,
            lambda: f"not every thread saw v2: {[answers[-1:] for answers in results]}",
        )

    assert [a for answers in results for a in answers if a[0] != 200] == []
    assert {body for answers in results for _, body in answers} == {"v1", "v2"}
    for answers in results:
        seen = [body for _, body in answers]
        assert "v1" not in seen[seen.index("v2") :], "v1 answered again after v2 had"


@pytest.mark.parametrize(
    ("handler", "requirements", "explanation"),
    [
        (RAISES_AT_IMPORT_HANDLER, "", "new version did not start"),
        (V1_HANDLER.replace("v1", "v2"), MISSING_REQUIREMENT, "installing requirements failed"),
    ],
    ids=["raises-at-import", "requirement-not-found"],
)
def test_update_to_broken_version_keeps_old_version_serving_and_logs_why(
    gateway: RunningGateway, handler: str, requirements: str, explanation: str
) -> None:
    gateway.deploy("stable", V1_HANDLER)

    with load(f"{gateway.url}/function/stable") as results:
        gateway.deploy("stable", handler, wait=False, requirements=requirements)
        wait_until(
            lambda: any(explanation in text for text in log_texts(gateway, "stable")),
            120,
            lambda: f"no log line says {explanation!r}: {log_texts(gateway, 'stable')[-10:]}",
        )
        # Keep the load going a little past the failed rollout.
        count = sum(map(len, results))
        wait_until(lambda: sum(map(len, results)) > count + 20, 10, "the load stalled")

    assert {answer for answers in results for answer in answers} == {(200, "v1")}


def test_update_while_previous_update_is_starting_stops_the_superseded_version(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("versioned", V1_HANDLER)
    gateway.deploy("versioned", SLOW_IMPORT_HANDLER, wait=False)
    wait_until(lambda: "versioned-2-0" in hostnames(gateway), 10, "version 2 never started")

    gateway.deploy("versioned", V1_HANDLER.replace("v1", "v3"), wait=False)

    wait_until(lambda: gateway.client.invoke("versioned").text == "v3", 20, "v3 never served")
    wait_until(
        lambda: hostnames(gateway) == ["versioned-3-0"],
        10,
        lambda: f"replicas left running: {hostnames(gateway)}",
    )


# -- crash and restart -----------------------------------------------------------------------------
def test_crashed_replica_is_replaced_by_a_new_process_after_503s_only(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("crashy", CRASH_HANDLER)
    pid_before = gateway.client.invoke("crashy").text

    gateway.client.invoke("crashy", path="crash")
    answers = invoke_until_200(gateway, "crashy", 15)

    assert answers[-1][1] != pid_before, "the crashed process answered: nothing restarted it"
    assert {status for status, _ in answers[:-1]} <= {503}
    assert any("restarting in" in text for text in log_texts(gateway, "crashy"))


def test_crashed_replica_with_a_helper_process_is_restarted_and_the_helper_ended(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("helped", HELPER_HANDLER)
    before = gateway.client.invoke("helped").json()

    gateway.client.invoke("helped", path="crash")
    # The helper inherited the replica's output pipe: it must not hold up the restart.
    answers = invoke_until_200(gateway, "helped", 10)

    assert json.loads(answers[-1][1])["pid"] != before["pid"]
    assert not alive(before["helper"])


def test_repeated_crashes_wait_longer_before_each_restart(gateway: RunningGateway) -> None:
    gateway.deploy("crashy", CRASH_HANDLER)
    recovery: list[float] = []
    for _ in range(3):
        crashed_at = time.monotonic()
        gateway.client.invoke("crashy", path="crash")
        invoke_until_200(gateway, "crashy", 20)
        recovery.append(time.monotonic() - crashed_at)

    announced = [
        float(text.split("restarting in ")[1].split()[0])
        for text in log_texts(gateway, "crashy")
        if "restarting in" in text
    ]
    assert announced == [0.5, 1.0, 2.0]
    assert all(took >= delay for took, delay in zip(recovery, announced, strict=True)), recovery
    assert recovery[0] < recovery[1] < recovery[2], recovery


# -- replicas --------------------------------------------------------------------------------------
def test_deploy_with_scale_min_three_runs_three_processes_taking_turns(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("echo", ECHO_HANDLER, labels={"com.openfaas.scale.min": "3"})
    gateway.wait_ready("echo", 3)

    answered = Counter(gateway.client.invoke("echo").json()["hostname"] for _ in range(6))

    assert gateway.client.get_function("echo")["availableReplicas"] == 3
    assert sorted(answered) == hostnames(gateway)
    assert list(answered.values()) == [2, 2, 2]


def test_scale_from_three_to_one_stops_the_two_extra_processes(gateway: RunningGateway) -> None:
    gateway.deploy("echo", ECHO_HANDLER, labels={"com.openfaas.scale.min": "3"})
    gateway.wait_ready("echo", 3)
    before = set(replica_processes(gateway, "echo"))

    gateway.client.scale("echo", 1)

    wait_until(
        lambda: sum(map(alive, before)) == 1,
        10,
        lambda: f"still running: {[p for p in before if alive(p)]} of {before}",
    )
    assert set(replica_processes(gateway, "echo")) < before
    assert gateway.client.get_function("echo")["availableReplicas"] == 1


# -- removal ---------------------------------------------------------------------------------------
def test_remove_function_leaves_no_process_port_files_or_route(gateway: RunningGateway) -> None:
    gateway.deploy("doomed", ECHO_HANDLER, labels={"com.openfaas.scale.min": "2"})
    gateway.wait_ready("doomed", 2)
    processes = replica_processes(gateway, "doomed")
    ports = [int(env["port"]) for env in processes.values()]
    run_dir = gateway.state_dir / "run" / "doomed"
    log_file = gateway.state_dir / "logs" / "doomed.log"
    assert len(processes) == 2 and run_dir.is_dir() and log_file.is_file()

    gateway.client.remove("doomed")

    def leftovers() -> list[str]:
        found = [f"process {pid}" for pid in processes if alive(pid)]
        found += [f"port {port}" for port in ports if accepts_connections(port)]
        found += [str(path) for path in (run_dir, log_file) if path.exists()]
        return found

    wait_until(lambda: not leftovers(), 10, lambda: f"left behind: {leftovers()}")
    assert gateway.client.invoke("doomed").status_code == 404


def test_remove_function_ends_helper_processes_it_started(gateway: RunningGateway) -> None:
    gateway.deploy("helped", HELPER_HANDLER)
    helper = gateway.client.invoke("helped").json()["helper"]

    gateway.client.remove("helped")

    wait_until(lambda: not alive(helper), 10, f"helper process {helper} still runs")


def test_remove_while_first_version_is_starting_leaves_no_process(gateway: RunningGateway) -> None:
    gateway.deploy("doomed", SLOW_IMPORT_HANDLER, wait=False)
    started = wait_until(lambda: replica_processes(gateway), 10, "the replica never started")

    gateway.client.remove("doomed")

    wait_until(
        lambda: not any(map(alive, started)) and not replica_processes(gateway),
        10,
        lambda: f"left behind: {hostnames(gateway)}",
    )


def test_remove_while_old_version_drains_finishes_its_request_and_leaves_nothing(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("doomed", SLOW_PATH_HANDLER)
    slow: list[requests.Response] = []
    caller = threading.Thread(
        target=lambda: slow.append(gateway.client.invoke("doomed", path="slow", timeout=20)),
        daemon=True,
    )
    caller.start()
    wait_until(
        lambda: "slow call started" in log_texts(gateway, "doomed"), 10, "slow call never started"
    )
    gateway.deploy("doomed", V1_HANDLER.replace("v1", "v2"), wait=False)
    wait_until(lambda: gateway.client.invoke("doomed").text == "v2", 20, "v2 never served")

    gateway.client.remove("doomed")

    caller.join(20)
    wait_until(
        lambda: not replica_processes(gateway), 10, lambda: f"left behind: {hostnames(gateway)}"
    )
    assert [(r.status_code, r.text) for r in slow] == [(200, "v1")]
    files = [gateway.state_dir / "run" / "doomed", gateway.state_dir / "logs" / "doomed.log"]
    assert [path for path in files if path.exists()] == []


# -- environment -----------------------------------------------------------------------------------
REPLICA_PORT = "<the port the runtime gave the replica>"


@pytest.mark.parametrize(
    ("env_vars", "name", "expected"),
    [
        ({"GREETING": "hello"}, "GREETING", "hello"),
        ({}, "OFC_TEST_LEAK", None),
        ({"port": "1"}, "port", REPLICA_PORT),
        ({"bind_address": "0.0.0.0"}, "bind_address", "127.0.0.1"),
    ],
    ids=[
        "deployment-var-reaches-function",
        "gateway-var-does-not-leak",
        "port-not-overridable",
        "bind-address-not-overridable",
    ],
)
def test_function_environment_has_deployment_vars_and_platform_settings_only(
    make_gateway: Callable[..., RunningGateway],
    env_vars: dict[str, str],
    name: str,
    expected: str | None,
) -> None:
    gateway = make_gateway(OFC_TEST_LEAK="secret")
    gateway.deploy("env", ENVIRON_HANDLER, env_vars=env_vars)
    (replica,) = replica_processes(gateway, "env").values()

    response = gateway.client.invoke("env")

    assert response.status_code == 200
    environ = response.json()
    if expected == REPLICA_PORT:
        expected = replica["port"]
    assert environ.get(name) == expected, json.dumps(environ, indent=1)
