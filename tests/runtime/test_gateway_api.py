"""The embedded gateway's OpenFaaS API, through real HTTP against ``python -m runtime``.

Tests that only read, or that deploy functions under names nobody else uses, share one
gateway (``shared``); tests that change what others would see (scaling, secrets,
deletes, timeouts, queue state) get their own (``gateway``/``make_gateway``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import queue
import random
import socket
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests

from tests.conftest import ECHO_HANDLER, RunningGateway, free_port
from tests.helpers import wait_until

T = TypeVar("T")

# -- functions the tests deploy ------------------------------------------------------------------

# The echo handler plus what the gateway's pass-through is judged by: the method also as
# a header (a HEAD answer has no body), the request-target exactly as the server got it
# (werkzeug percent-decodes ``event.path``; waitress keeps the raw one in REQUEST_URI),
# and the body's length and digest.
PROBE_HANDLER = """
import hashlib
from flask import request

def handle(event, context):
    return {
        "statusCode": 200,
        "headers": {"X-Seen-Method": event.method},
        "body": {
            "method": event.method,
            "path": event.path,
            "raw_uri": request.environ.get("REQUEST_URI"),
            "query": {k: event.query.getlist(k) for k in event.query},
            "headers": {k.lower(): v for k, v in event.headers.items()},
            "length": len(event.body),
            "sha256": hashlib.sha256(event.body).hexdigest(),
        },
    }
"""

# A bare http.server run as the function's process (envProcess), for what reaches the
# wire: waitress, under python3-http, deletes X-Forwarded-* headers from untrusted
# peers before the handler could see them.
RAW_SERVER = """
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {"target": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ["bind_address"], int(os.environ["port"])), Echo).serve_forever()
"""

STATUS_HANDLER = """
def handle(event, context):
    status = int(event.query.get("status", "200"))
    return {"statusCode": status, "body": f"function answered {status}"}
"""

SHOUT_HANDLER = """
def handle(event, context):
    return event.body.decode().upper()
"""

PRINT_HANDLER = """
def handle(event, context):
    print("said " + event.body.decode(), flush=True)
    return context.hostname
"""

STORE_HANDLER = """
import os

def handle(event, context):
    with open(os.path.join(os.environ["OUT_DIR"], "calls.txt"), "ab") as fh:
        fh.write(event.body + b"\\n")
    return "stored"
"""

SLEEP_HANDLER = """
import time

def handle(event, context):
    time.sleep(3)
    return "woke up"
"""

SECRET_HANDLER = """
import os

def handle(event, context):
    with open(os.path.join(os.environ["secret_mount_path"], "api-key")) as fh:
        return fh.read()
"""


def version_handler(version: str) -> str:
    return f"def handle(event, context):\n    return {version!r}\n"


# -- helpers -------------------------------------------------------------------------------------


def system(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A ``/system/*`` call with the gateway's credentials."""
    return requests.request(method, gw.url + path, auth=gw.credentials, timeout=30, **kwargs)


def invoke(
    gw: RunningGateway, target: str, body: bytes = b"", method: str = "POST", **kwargs: Any
) -> requests.Response:
    """A call to ``/function/<target>`` (``target`` may carry a path and query)."""
    return requests.request(method, f"{gw.url}/function/{target}", data=body, timeout=30, **kwargs)


def eventually(check: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    return wait_until(check, timeout, f"waiting for {what}")


def status_of(gw: RunningGateway, name: str) -> dict[str, Any]:
    response = system(gw, "GET", f"/system/function/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_available(gw: RunningGateway, name: str, replicas: int) -> None:
    eventually(
        lambda: status_of(gw, name)["availableReplicas"] == replicas,
        f"{name} to have exactly {replicas} available replicas",
    )


def log_records(gw: RunningGateway, name: str, **params: str) -> list[dict[str, str]]:
    response = system(gw, "GET", "/system/logs", params={"name": name, **params})
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line]


def log_texts(gw: RunningGateway, name: str, **params: str) -> list[str]:
    return [record["text"] for record in log_records(gw, name, **params)]


def metric(gw: RunningGateway, series: str) -> float:
    """The value of one Prometheus series on ``/metrics`` (0 when absent)."""
    text = requests.get(gw.url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def queued_call(gw: RunningGateway, call_id: str, status: str) -> dict[str, Any] | None:
    response = system(gw, "GET", "/system/queue", params={"status": status})
    assert response.status_code == 200, response.text
    return next((c for c in response.json()["calls"] if c["callId"] == call_id), None)


def raw_exchange(gw: RunningGateway, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection and read until the gateway closes it."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


class CallbackReceiver:
    """A loopback HTTP server recording every POST as (lower-cased headers, body)."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        received = self.received

        class Record(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                received.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Record)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/done"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[RunningGateway]:
    """One gateway for tests that do not change what other tests see.

    Deployed: ``echo`` (conftest's handler), ``probe``, ``raw``, ``status``, ``shout``.
    """
    state = tmp_path_factory.mktemp("shared") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    try:
        gw.deploy("echo", ECHO_HANDLER)
        gw.deploy("probe", PROBE_HANDLER)
        gw.deploy("raw", RAW_SERVER, env_process="python function/handler.py")
        gw.deploy("status", STATUS_HANDLER)
        gw.deploy("shout", SHOUT_HANDLER)
        yield gw
    finally:
        gw.stop()


# -- /system/functions ---------------------------------------------------------------------------


def test_list_functions_reports_each_deployed_function_with_its_spec_and_status(
    shared: RunningGateway,
) -> None:
    shared.deploy(
        "described",
        ECHO_HANDLER,
        labels={"team": "blue"},
        annotations={"topic": "orders"},
        env_process="python index.py",
    )

    listed = {f["name"]: f for f in system(shared, "GET", "/system/functions").json()}

    entry = listed["described"]
    expected = {
        "name": "described",
        "image": "described:latest",
        "replicas": 1,
        "availableReplicas": 1,
        "invocationCount": 0,
        "labels": {"team": "blue"},
        "annotations": {"topic": "orders"},
        "envProcess": "python index.py",
    }
    assert {key: entry.get(key) for key in expected} == expected
    created = datetime.fromisoformat(entry["createdAt"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - created).total_seconds()) < 600


def test_deploy_function_answers_202_and_the_function_becomes_invocable(
    gateway: RunningGateway,
) -> None:
    gateway.store_function("fresh:latest", SHOUT_HANDLER)

    response = system(
        gateway, "POST", "/system/functions", json={"service": "fresh", "image": "fresh:latest"}
    )

    assert response.status_code == 202, response.text
    gateway.wait_ready("fresh")
    assert invoke(gateway, "fresh", b"hi").text == "HI"


def test_deploy_function_with_a_taken_name_answers_409_naming_it(shared: RunningGateway) -> None:
    response = system(
        shared, "POST", "/system/functions", json={"service": "echo", "image": "echo:latest"}
    )

    assert response.status_code == 409
    assert "echo" in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"service": "Bad_Name", "image": "echo:latest"}, "service"),
        ({"image": "echo:latest"}, "service"),
        ({"service": "x1"}, "image"),
        ({"service": "x1", "image": 5}, "image"),
        ({"service": "x1", "image": "Echo:latest"}, "image"),
        ({"service": "x1", "image": "echo:latest", "envVars": ["A=1"]}, "envVars"),
        ({"service": "x1", "image": "echo:latest", "labels": {"a": 1}}, "labels"),
        ({"service": "x1", "image": "echo:latest", "secrets": "api-key"}, "secrets"),
        (
            {"service": "x1", "image": "echo:latest", "readOnlyRootFilesystem": "yes"},
            "readOnlyRootFilesystem",
        ),
        ({"service": "x1", "image": "echo:latest", "limits": "1G"}, "limits"),
        ([{"service": "x1", "image": "echo:latest"}], "body"),
    ],
    ids=[
        "invalid-name",
        "missing-service",
        "missing-image",
        "image-not-a-string",
        "malformed-image-reference",
        "env-vars-not-an-object",
        "label-value-not-a-string",
        "secrets-not-a-list",
        "read-only-not-a-boolean",
        "limits-not-an-object",
        "body-not-an-object",
    ],
)
def test_deploy_function_with_an_invalid_body_answers_400_naming_the_field(
    shared: RunningGateway, body: Any, field: str
) -> None:
    response = system(shared, "POST", "/system/functions", json=body)

    assert response.status_code == 400
    assert field in response.text


def test_deploy_function_with_an_unknown_image_answers_400_saying_to_build_it(
    shared: RunningGateway,
) -> None:
    response = system(
        shared, "POST", "/system/functions", json={"service": "ghost", "image": "ghost:latest"}
    )

    assert response.status_code == 400
    assert "ghost:latest" in response.text
    assert "build it" in response.text


def test_deploy_function_with_a_missing_secret_answers_400_naming_it(
    shared: RunningGateway,
) -> None:
    body = {"service": "x1", "image": "echo:latest", "secrets": ["no-such-key"]}

    response = system(shared, "POST", "/system/functions", json=body)

    assert response.status_code == 400
    assert "no-such-key" in response.text


def test_update_function_answers_200_and_the_new_version_serves(gateway: RunningGateway) -> None:
    gateway.deploy("greeter", version_handler("v1"))
    gateway.store_function("greeter:v2", version_handler("v2"))

    response = system(
        gateway, "PUT", "/system/functions", json={"service": "greeter", "image": "greeter:v2"}
    )

    assert response.status_code == 200, response.text
    eventually(lambda: invoke(gateway, "greeter").text == "v2", "greeter to answer v2")


def test_update_function_of_an_unknown_function_answers_404(shared: RunningGateway) -> None:
    response = system(
        shared, "PUT", "/system/functions", json={"service": "ghost", "image": "echo:latest"}
    )

    assert response.status_code == 404
    assert "ghost" in response.text


def test_delete_function_answers_200(gateway: RunningGateway) -> None:
    gateway.deploy("doomed", ECHO_HANDLER)

    response = system(gateway, "DELETE", "/system/functions", json={"functionName": "doomed"})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "observe",
    [
        lambda gw: (
            "doomed" not in [f["name"] for f in system(gw, "GET", "/system/functions").json()]
        ),
        lambda gw: system(gw, "GET", "/system/function/doomed").status_code == 404,
        lambda gw: invoke(gw, "doomed").status_code == 404,
    ],
    ids=["gone-from-list", "status-404", "invoke-404"],
)
def test_deleted_function_is_gone(
    gateway: RunningGateway, observe: Callable[[RunningGateway], bool]
) -> None:
    gateway.deploy("doomed", ECHO_HANDLER)
    deleted = system(gateway, "DELETE", "/system/functions", json={"functionName": "doomed"})
    assert deleted.status_code == 200

    assert observe(gateway)


def test_delete_function_of_an_unknown_function_answers_404(shared: RunningGateway) -> None:
    response = system(shared, "DELETE", "/system/functions", json={"functionName": "ghost"})

    assert response.status_code == 404
    assert "ghost" in response.text


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": b"functionName=echo"},
        {"data": b""},
        {"json": ["echo"]},
        {"json": {}},
        {"json": {"functionName": "../echo"}},
        {"json": {"functionName": "ghost", "namespace": 5}},
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "missing-function-name",
        "invalid-name",
        "namespace-not-a-string",
    ],
)
def test_delete_function_with_a_malformed_body_answers_400(
    shared: RunningGateway, request_kwargs: dict[str, Any]
) -> None:
    response = system(shared, "DELETE", "/system/functions", **request_kwargs)

    assert response.status_code == 400
    assert status_of(shared, "echo")["availableReplicas"] == 1


def test_list_functions_invocation_count_grows_with_each_call(gateway: RunningGateway) -> None:
    gateway.deploy("counted", ECHO_HANDLER)
    for _ in range(3):
        assert invoke(gateway, "counted").status_code == 200

    def counted_three() -> bool:
        listed = {f["name"]: f for f in system(gateway, "GET", "/system/functions").json()}
        return bool(listed["counted"]["invocationCount"] == 3)

    eventually(counted_three, "invocationCount of counted to reach 3")


# -- /system/function/{name} ---------------------------------------------------------------------


def test_function_status_of_a_deployed_function_answers_200_with_its_status(
    shared: RunningGateway,
) -> None:
    response = system(shared, "GET", "/system/function/echo")

    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("name", "image", "availableReplicas")} == {
        "name": "echo",
        "image": "echo:latest",
        "availableReplicas": 1,
    }


def test_function_status_of_an_unknown_function_answers_404(shared: RunningGateway) -> None:
    response = system(shared, "GET", "/system/function/ghost")

    assert response.status_code == 404
    assert "ghost" in response.text


# -- /system/scale-function/{name} ---------------------------------------------------------------


def test_scale_function_to_two_replicas_makes_calls_alternate_between_them(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("pair", ECHO_HANDLER)

    response = system(
        gateway, "POST", "/system/scale-function/pair", json={"serviceName": "pair", "replicas": 2}
    )

    assert response.status_code in (200, 202), response.text
    wait_available(gateway, "pair", 2)
    hosts = [invoke(gateway, "pair").json()["hostname"] for _ in range(6)]
    assert len(set(hosts)) == 2
    assert all(a != b for a, b in zip(hosts, hosts[1:], strict=False)), hosts


def test_scale_function_to_zero_makes_calls_answer_503_naming_the_function(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("idle", ECHO_HANDLER)

    system(
        gateway, "POST", "/system/scale-function/idle", json={"serviceName": "idle", "replicas": 0}
    )

    wait_available(gateway, "idle", 0)
    response = invoke(gateway, "idle")
    assert response.status_code == 503
    assert "idle" in response.text
    assert response.headers.get("X-OpenFaaS-Internal") == "gateway"


@pytest.mark.parametrize(
    ("labels", "requested", "granted"),
    [({"com.openfaas.scale.max": "3"}, 10, 3), ({}, 10, 5)],
    ids=["label-max", "default-max-5"],
)
def test_scale_function_above_the_maximum_is_clamped(
    gateway: RunningGateway, labels: dict[str, str], requested: int, granted: int
) -> None:
    gateway.deploy("capped", ECHO_HANDLER, labels=labels)

    system(
        gateway,
        "POST",
        "/system/scale-function/capped",
        json={"serviceName": "capped", "replicas": requested},
    )

    assert status_of(gateway, "capped")["replicas"] == granted


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"serviceName": "echo", "replicas": -1}, "replicas"),
        ({"serviceName": "echo", "replicas": 1.5}, "replicas"),
        ({"serviceName": "echo", "replicas": "2"}, "replicas"),
        ({"serviceName": "echo", "replicas": None}, "replicas"),
        ({"serviceName": "echo", "replicas": True}, "replicas"),
        ({"serviceName": "echo"}, "replicas"),
        ({"serviceName": "other", "replicas": 1}, "serviceName"),
        ({"serviceName": "echo", "replicas": 1, "namespace": ["openfaas-fn"]}, "namespace"),
    ],
    ids=[
        "negative",
        "fraction",
        "string",
        "null",
        "boolean",
        "missing",
        "service-name-mismatch",
        "namespace-not-a-string",
    ],
)
def test_scale_function_with_an_invalid_body_answers_400_naming_the_field(
    shared: RunningGateway, body: dict[str, Any], field: str
) -> None:
    response = system(shared, "POST", "/system/scale-function/echo", json=body)

    assert response.status_code == 400
    assert field in response.text


def test_scale_function_of_an_unknown_function_answers_404(shared: RunningGateway) -> None:
    response = system(
        shared, "POST", "/system/scale-function/ghost", json={"serviceName": "ghost", "replicas": 1}
    )

    assert response.status_code == 404


# -- /system/info, /system/namespaces ------------------------------------------------------------


def test_info_reports_provider_version_and_architecture(shared: RunningGateway) -> None:
    info = system(shared, "GET", "/system/info").json()

    assert {
        "provider": info["provider"]["provider"],
        "orchestration": info["provider"]["orchestration"],
        "provider-release": bool(info["provider"]["version"]["release"]),
        "release": bool(info["version"]["release"]),
        "sha": bool(info["version"]["sha"]),
        "arch": info["arch"],
    } == {
        "provider": "ofc-process",
        "orchestration": "process",
        "provider-release": True,
        "release": True,
        "sha": True,
        "arch": platform.machine(),
    }


def test_namespaces_lists_the_one_namespace(shared: RunningGateway) -> None:
    response = system(shared, "GET", "/system/namespaces")

    assert response.status_code == 200
    assert response.json() == ["openfaas-fn"]


# -- /system/secrets -----------------------------------------------------------------------------


def test_secrets_create_answers_201_and_the_list_names_it_without_its_value(
    gateway: RunningGateway,
) -> None:
    response = system(
        gateway, "POST", "/system/secrets", json={"name": "db-password", "value": "hunter2"}
    )

    assert response.status_code == 201
    assert system(gateway, "GET", "/system/secrets").json() == [
        {"name": "db-password", "namespace": "openfaas-fn"}
    ]


def test_secrets_create_with_a_taken_name_answers_409(gateway: RunningGateway) -> None:
    system(gateway, "POST", "/system/secrets", json={"name": "db-password", "value": "one"})

    response = system(
        gateway, "POST", "/system/secrets", json={"name": "db-password", "value": "two"}
    )

    assert response.status_code == 409


def test_secrets_update_answers_200_and_functions_deployed_later_read_the_new_value(
    gateway: RunningGateway,
) -> None:
    system(gateway, "POST", "/system/secrets", json={"name": "api-key", "value": "old"})

    response = system(gateway, "PUT", "/system/secrets", json={"name": "api-key", "value": "new"})

    assert response.status_code == 200
    gateway.deploy("reader", SECRET_HANDLER, secrets=["api-key"])
    assert invoke(gateway, "reader").text == "new"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_secrets_with_a_malformed_namespace_answer_400(shared: RunningGateway, method: str) -> None:
    body = {"name": "ns-probe", "value": "x", "namespace": {"name": "openfaas-fn"}}

    response = system(shared, method, "/system/secrets", json=body)

    assert response.status_code == 400
    assert "namespace" in response.text


def test_secrets_update_of_an_unknown_secret_answers_404(shared: RunningGateway) -> None:
    response = system(shared, "PUT", "/system/secrets", json={"name": "ghost", "value": "x"})

    assert response.status_code == 404


def test_secrets_delete_answers_204_and_a_second_delete_404(gateway: RunningGateway) -> None:
    system(gateway, "POST", "/system/secrets", json={"name": "db-password", "value": "hunter2"})

    first = system(gateway, "DELETE", "/system/secrets", json={"name": "db-password"})
    second = system(gateway, "DELETE", "/system/secrets", json={"name": "db-password"})

    assert (first.status_code, second.status_code) == (204, 404)


@pytest.mark.parametrize("form", ["value", "rawValue"])
def test_secret_value_never_appears_in_an_api_response_or_the_gateway_log(
    gateway: RunningGateway, form: str
) -> None:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    field = (
        {"value": value}
        if form == "value"
        else {"rawValue": base64.b64encode(value.encode()).decode()}
    )
    responses = [
        system(gateway, "POST", "/system/secrets", json={"name": "api-key", **field}),
        system(gateway, "POST", "/system/secrets", json={"name": "api-key", **field}),
        system(gateway, "PUT", "/system/secrets", json={"name": "api-key", **field}),
        system(gateway, "PUT", "/system/secrets", json={"name": "Not A Name", **field}),
        system(
            gateway,
            "POST",
            "/system/secrets",
            json={"name": "other", "value": value, "rawValue": "%%%"},
        ),
        system(gateway, "GET", "/system/secrets"),
    ]
    gateway.deploy("holder", ECHO_HANDLER, secrets=["api-key"])
    invoke(gateway, "holder")
    responses += [
        system(gateway, "GET", "/system/functions"),
        system(gateway, "GET", "/system/function/holder"),
        system(gateway, "GET", "/system/logs", params={"name": "holder"}),
        system(gateway, "GET", "/system/info"),
        system(gateway, "GET", "/system/queue"),
        requests.get(gateway.url + "/metrics", timeout=30),
    ]

    spellings = (value, base64.b64encode(value.encode()).decode())
    leaks = [
        f"{r.request.method} {r.url}"
        for r in responses
        for text in spellings
        if text in r.text or text in str(r.headers)
    ]
    assert leaks == []
    assert not any(text in gateway.logs() for text in spellings)


def test_function_deployed_with_a_secret_reads_it_from_secret_mount_path(
    gateway: RunningGateway,
) -> None:
    system(gateway, "POST", "/system/secrets", json={"name": "api-key", "value": "open-sesame"})

    gateway.deploy("reader", SECRET_HANDLER, secrets=["api-key"])

    assert invoke(gateway, "reader").text == "open-sesame"


# -- /system/logs --------------------------------------------------------------------------------


def test_logs_answer_ndjson_records_with_name_namespace_instance_timestamp_and_text(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("printer", PRINT_HANDLER)
    instance = invoke(gateway, "printer", b"hello").text
    eventually(
        lambda: "said hello" in log_texts(gateway, "printer"), "the printed line in the logs"
    )

    response = system(gateway, "GET", "/system/logs", params={"name": "printer"})

    assert response.headers["Content-Type"] == "application/x-ndjson"
    record = next(
        r for r in map(json.loads, response.text.splitlines()) if r["text"] == "said hello"
    )
    assert sorted(record) == ["instance", "name", "namespace", "text", "timestamp"]
    assert (record["name"], record["namespace"], record["instance"]) == (
        "printer",
        "openfaas-fn",
        instance,
    )
    stamped = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - stamped).total_seconds()) < 600


def test_logs_with_tail_answer_only_the_last_records(gateway: RunningGateway) -> None:
    gateway.deploy("printer", PRINT_HANDLER)
    for word in (b"one", b"two", b"three"):
        invoke(gateway, "printer", word)
    eventually(lambda: "said three" in log_texts(gateway, "printer"), "the last printed line")

    assert log_texts(gateway, "printer", tail="2") == ["said two", "said three"]


def test_logs_with_since_answer_only_records_from_then_on(gateway: RunningGateway) -> None:
    gateway.deploy("printer", PRINT_HANDLER)
    invoke(gateway, "printer", b"early")
    eventually(lambda: "said early" in log_texts(gateway, "printer"), "the early line")
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    invoke(gateway, "printer", b"late")
    eventually(lambda: "said late" in log_texts(gateway, "printer"), "the late line")

    assert log_texts(gateway, "printer", since=since) == ["said late"]


def test_logs_with_follow_stream_a_line_printed_after_the_request_started(
    gateway: RunningGateway,
) -> None:
    gateway.deploy("printer", PRINT_HANDLER)
    invoke(gateway, "printer", b"before")
    eventually(lambda: "said before" in log_texts(gateway, "printer"), "the first line")

    with requests.get(
        gateway.url + "/system/logs",
        params={"name": "printer", "follow": "true"},
        auth=gateway.credentials,
        stream=True,
        timeout=(5, 15),  # a line that never comes fails the test after 15 s of silence
    ) as stream:
        lines = (json.loads(line)["text"] for line in stream.iter_lines() if line)
        for text in lines:
            if text == "said before":
                break
        invoke(gateway, "printer", b"after")
        following = next(text for text in lines if text.startswith("said "))

    assert following == "said after"


def test_logs_of_an_unknown_function_answer_404(shared: RunningGateway) -> None:
    response = system(shared, "GET", "/system/logs", params={"name": "ghost"})

    assert response.status_code == 404
    assert "ghost" in response.text


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"name": ""},
        {"name": "echo", "tail": "ten"},
        {"name": "echo", "since": "yesterday"},
        {"name": "echo", "follow": "maybe"},
    ],
    ids=[
        "missing-name",
        "empty-name",
        "tail-not-a-number",
        "since-not-a-time",
        "follow-not-a-boolean",
    ],
)
def test_logs_with_bad_parameters_answer_422(
    shared: RunningGateway, params: dict[str, str]
) -> None:
    response = system(shared, "GET", "/system/logs", params=params)

    assert response.status_code == 422


# -- /healthz, /metrics --------------------------------------------------------------------------


def test_healthz_answers_200_without_credentials(shared: RunningGateway) -> None:
    response = requests.get(shared.url + "/healthz", timeout=30)

    assert response.status_code == 200


@pytest.mark.parametrize(
    "series",
    [
        'gateway_function_invocation_total{code="200",function_name="echo.openfaas-fn"}',
        'gateway_functions_seconds_count{code="200",function_name="echo.openfaas-fn"}',
    ],
    ids=["invocation-total", "duration-histogram-count"],
)
def test_metrics_count_each_call_without_credentials(shared: RunningGateway, series: str) -> None:
    before = metric(shared, series)

    for _ in range(3):
        assert invoke(shared, "echo").status_code == 200

    eventually(lambda: metric(shared, series) == before + 3, f"{series} to grow by 3")


def test_metrics_report_replicas_per_function(shared: RunningGateway) -> None:
    assert metric(shared, 'gateway_service_count{function_name="echo.openfaas-fn"}') == 1


# -- basic auth ----------------------------------------------------------------------------------

SYSTEM_ROUTES = [
    ("GET", "/system/functions"),
    ("POST", "/system/functions"),
    ("PUT", "/system/functions"),
    ("DELETE", "/system/functions"),
    ("GET", "/system/function/echo"),
    ("POST", "/system/scale-function/echo"),
    ("GET", "/system/info"),
    ("GET", "/system/namespaces"),
    ("GET", "/system/secrets"),
    ("POST", "/system/secrets"),
    ("PUT", "/system/secrets"),
    ("DELETE", "/system/secrets"),
    ("GET", "/system/logs?name=echo"),
    ("GET", "/system/queue"),
    ("POST", "/system/queue/retry"),
    ("GET", "/system/no-such-route"),
]

BAD_CREDENTIALS: dict[str, Callable[[str, str], tuple[str, str] | None]] = {
    "no-header": lambda user, password: None,
    "wrong-password": lambda user, password: (user, password + "x"),
    "wrong-user": lambda user, password: (user + "x", password),
}


@pytest.mark.parametrize("credentials", list(BAD_CREDENTIALS))
@pytest.mark.parametrize("route", SYSTEM_ROUTES, ids=[f"{m}-{p}" for m, p in SYSTEM_ROUTES])
def test_system_route_without_valid_credentials_answers_401_with_a_basic_challenge(
    shared: RunningGateway, route: tuple[str, str], credentials: str
) -> None:
    method, path = route
    auth = BAD_CREDENTIALS[credentials](*shared.credentials)

    response = requests.request(method, shared.url + path, auth=auth, json={}, timeout=30)

    assert response.status_code == 401
    assert response.headers.get("WWW-Authenticate") == 'Basic realm="Restricted"'


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/function/echo"),
        ("GET", "/function/echo/sub"),
        ("POST", "/async-function/shout"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    ],
    ids=["function", "function-subpath", "async-function", "healthz", "metrics"],
)
def test_public_route_answers_without_credentials(
    shared: RunningGateway, method: str, path: str
) -> None:
    response = requests.request(method, shared.url + path, timeout=30)

    assert 200 <= response.status_code < 300, response.text


@pytest.mark.parametrize("file_name", ["basic-auth-user", "basic-auth-password"])
def test_gateway_credential_files_are_readable_by_the_owner_only(
    shared: RunningGateway, file_name: str
) -> None:
    path = shared.state_dir / "secrets" / "gateway" / file_name

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- /function/{name} ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"])
def test_invoke_passes_the_method_to_the_function(shared: RunningGateway, method: str) -> None:
    response = invoke(shared, "probe", method=method)

    assert response.status_code == 200
    assert response.headers["X-Seen-Method"] == method


def test_invoke_passes_options_to_the_function(shared: RunningGateway) -> None:
    # python3-http (Flask) answers OPTIONS itself, with the methods its routes take;
    # that Allow list can only come from the function, never from the gateway.
    response = invoke(shared, "probe", method="OPTIONS")

    assert response.status_code == 200
    assert {"GET", "POST", "PUT", "PATCH", "DELETE"} <= {
        m.strip() for m in response.headers["Allow"].split(",")
    }


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("probe", "/", {}),
        ("probe/", "/", {}),
        ("probe/a/b", "/a/b", {}),
        ("probe?x=1", "/", {"x": ["1"]}),
        ("probe/q?tag=a&tag=b&x=1", "/q", {"tag": ["a", "b"], "x": ["1"]}),
        ("probe.openfaas-fn/a", "/a", {}),
    ],
    ids=[
        "no-suffix",
        "trailing-slash",
        "nested-suffix",
        "query-only",
        "repeated-query-keys",
        "dotted-namespace",
    ],
)
def test_invoke_passes_the_path_suffix_and_query_to_the_function(
    shared: RunningGateway, target: str, path: str, query: dict[str, list[str]]
) -> None:
    seen = invoke(shared, target, method="GET").json()

    assert (seen["path"], seen["query"]) == (path, query)


def test_invoke_keeps_a_percent_encoded_slash_raw(shared: RunningGateway) -> None:
    # werkzeug decodes event.path ("/a/b"), so a function that needs the difference
    # reads the raw target; the gateway must not have decoded it on the way.
    seen = invoke(shared, "probe/a%2Fb?next=%2Fhome", method="GET").json()

    assert seen["raw_uri"] == "/a%2Fb?next=%2Fhome"


def test_invoke_passes_custom_headers_to_the_function(shared: RunningGateway) -> None:
    seen = invoke(shared, "probe", headers={"X-Foo": "bar"}).json()

    assert seen["headers"]["x-foo"] == "bar"


@pytest.mark.parametrize(
    ("headers", "dropped"),
    [
        ({"Connection": "x-drop", "X-Drop": "1"}, "x-drop"),
        ({"Proxy-Authorization": "Basic eDp5"}, "proxy-authorization"),
        ({"TE": "trailers"}, "te"),
        ({"Keep-Alive": "timeout=5"}, "keep-alive"),
    ],
    ids=["named-in-connection", "proxy-authorization", "te", "keep-alive"],
)
def test_invoke_drops_hop_by_hop_headers(
    shared: RunningGateway, headers: dict[str, str], dropped: str
) -> None:
    seen = invoke(shared, "raw", method="GET", headers={**headers, "X-Kept": "1"}).json()

    names = [name for name, _ in seen["headers"]]
    assert "x-kept" in names
    assert dropped not in names


@pytest.mark.parametrize("sent", [None, "call-from-client-1"], ids=["generated", "client-supplied"])
def test_invoke_returns_the_call_id_the_function_saw(
    shared: RunningGateway, sent: str | None
) -> None:
    response = invoke(shared, "probe", headers={"X-Call-Id": sent} if sent else {})

    call_id = response.headers.get("X-Call-Id")
    assert call_id
    assert response.json()["headers"]["x-call-id"] == call_id
    assert sent is None or call_id == sent


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("x-forwarded-for", lambda gw: "127.0.0.1"),
        ("x-forwarded-host", lambda gw: f"127.0.0.1:{gw.port}"),
    ],
    ids=["x-forwarded-for", "x-forwarded-host"],
)
def test_invoke_adds_forwarding_headers(
    shared: RunningGateway, header: str, expected: Callable[[RunningGateway], str]
) -> None:
    seen = invoke(shared, "raw", method="GET").json()

    assert dict(seen["headers"]).get(header) == expected(shared)


def test_invoke_round_trips_a_10_mb_body_intact(shared: RunningGateway) -> None:
    body = random.Random(10).randbytes(10 * 1024 * 1024)

    seen = invoke(shared, "probe", body).json()

    assert (seen["length"], seen["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())


def test_invoke_delivers_a_chunked_request_body_whole(shared: RunningGateway) -> None:
    pieces = [random.Random(i).randbytes(64 * 1024) for i in range(32)]

    response = requests.post(shared.url + "/function/probe", data=iter(pieces), timeout=30)

    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    whole = b"".join(pieces)
    assert (response.json()["length"], response.json()["sha256"]) == (
        len(whole),
        hashlib.sha256(whole).hexdigest(),
    )


@pytest.mark.parametrize("code", [500, 404, 418])
def test_invoke_passes_a_function_error_status_through_unmarked(
    shared: RunningGateway, code: int
) -> None:
    response = invoke(shared, f"status?status={code}", method="GET")

    assert (response.status_code, response.text) == (code, f"function answered {code}")
    assert "X-OpenFaaS-Internal" not in response.headers


@pytest.mark.parametrize(
    ("target", "status", "says"),
    [("ghost", 404, "ghost"), ("", 400, "function name")],
    ids=["unknown-function", "missing-name"],
)
def test_invoke_error_made_by_the_gateway_is_marked_internal_and_explains_itself(
    shared: RunningGateway, target: str, status: int, says: str
) -> None:
    response = invoke(shared, target)

    assert response.status_code == status
    assert response.headers.get("X-OpenFaaS-Internal") == "gateway"
    assert says in response.text


def test_invoke_slower_than_the_upstream_timeout_answers_504(
    make_gateway: Callable[..., RunningGateway],
) -> None:
    gw = make_gateway(OFC_UPSTREAM_TIMEOUT="1s")
    gw.deploy("sleeper", SLEEP_HANDLER)

    started = time.monotonic()
    response = invoke(gw, "sleeper")
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.headers.get("X-OpenFaaS-Internal") == "gateway"
    assert "sleeper" in response.text
    assert elapsed < 2.5  # the function sleeps 3 s: the gateway gave up first


def test_invoke_serves_100_sequential_calls_on_one_keep_alive_connection(
    shared: RunningGateway,
) -> None:
    with requests.Session() as session:
        answers = [
            session.get(f"{shared.url}/function/echo?i={i}", timeout=30).json()["query"]["i"]
            for i in range(100)
        ]
        pools = session.get_adapter(shared.url).poolmanager.pools
        connections = sum(pools[key].num_connections for key in pools.keys())

    assert answers == [[str(i)] for i in range(100)]
    assert connections == 1


# -- /async-function/{name} ----------------------------------------------------------------------


@pytest.mark.parametrize("sent", [None, "async-call-1"], ids=["generated", "client-supplied"])
def test_async_invoke_answers_202_with_a_call_id(shared: RunningGateway, sent: str | None) -> None:
    response = requests.post(
        shared.url + "/async-function/shout",
        headers={"X-Call-Id": sent} if sent else {},
        timeout=30,
    )

    call_id = response.headers.get("X-Call-Id")
    assert response.status_code == 202
    assert call_id
    assert sent is None or call_id == sent


def test_async_invoke_with_get_answers_405(shared: RunningGateway) -> None:
    response = requests.get(shared.url + "/async-function/shout", timeout=30)

    assert response.status_code == 405
    assert response.headers.get("Allow") == "POST"


def test_async_invoke_of_an_unknown_function_answers_404(shared: RunningGateway) -> None:
    response = requests.post(shared.url + "/async-function/ghost", timeout=30)

    assert response.status_code == 404
    assert "ghost" in response.text


@pytest.mark.parametrize(
    "callback",
    ["not a url", "ftp://127.0.0.1/done", "http://"],
    ids=["not-a-url", "not-http", "no-host"],
)
def test_async_invoke_with_an_invalid_callback_url_answers_400(
    shared: RunningGateway, callback: str
) -> None:
    response = requests.post(
        shared.url + "/async-function/shout", headers={"X-Callback-Url": callback}, timeout=30
    )

    assert response.status_code == 400
    assert "X-Callback-Url" in response.text


def test_async_invoke_runs_the_function_with_the_body(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    gateway.deploy("store", STORE_HANDLER, env_vars={"OUT_DIR": str(tmp_path)})

    requests.post(gateway.url + "/async-function/store", data=b"job-1", timeout=30)

    out = tmp_path / "calls.txt"
    eventually(
        lambda: out.exists() and out.read_bytes() == b"job-1\n", "the async call to store its body"
    )


@pytest.fixture(scope="module")
def callback(shared: RunningGateway) -> Iterator[tuple[str, dict[str, str], bytes]]:
    """One async call to ``shout`` with an X-Callback-Url: (call id, callback headers, body)."""
    receiver = CallbackReceiver()
    try:
        response = requests.post(
            shared.url + "/async-function/shout",
            data=b"hello",
            headers={"X-Callback-Url": receiver.url},
            timeout=30,
        )
        assert response.status_code == 202
        headers, body = receiver.received.get(timeout=30)
        yield response.headers["X-Call-Id"], headers, body
    finally:
        receiver.close()


def test_async_callback_receives_the_function_response_body(
    callback: tuple[str, dict[str, str], bytes],
) -> None:
    _, _, body = callback

    assert body == b"HELLO"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("x-call-id", lambda call_id: call_id),
        ("x-function-status", lambda call_id: "200"),
        ("x-function-name", lambda call_id: "shout"),
    ],
)
def test_async_callback_carries_the_call_metadata(
    callback: tuple[str, dict[str, str], bytes], header: str, expected: Callable[[str], str]
) -> None:
    call_id, headers, _ = callback

    assert headers.get(header) == expected(call_id)


def test_async_callback_carries_the_call_duration_in_seconds(
    callback: tuple[str, dict[str, str], bytes],
) -> None:
    _, headers, _ = callback

    assert 0 <= float(headers["x-duration-seconds"]) < 30


def park_a_failed_call(gw: RunningGateway, out_dir: Path) -> str:
    """Deploy ``store``, scale it to zero, and queue a call that can only fail; its call id."""
    gw.deploy("store", STORE_HANDLER, env_vars={"OUT_DIR": str(out_dir)})
    system(gw, "POST", "/system/scale-function/store", json={"serviceName": "store", "replicas": 0})
    wait_available(gw, "store", 0)
    response = requests.post(gw.url + "/async-function/store", data=b"parked", timeout=30)
    assert response.status_code == 202
    return response.headers["X-Call-Id"]


def test_async_call_to_an_unreachable_function_is_parked_as_failed_after_its_attempts(
    make_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gw = make_gateway(OFC_ASYNC_MAX_ATTEMPTS="2", OFC_ASYNC_RETRY_WINDOW="0s")
    call_id = park_a_failed_call(gw, tmp_path)

    failed = eventually(
        lambda: queued_call(gw, call_id, "failed"), "the call to be parked as failed"
    )

    assert failed["attempts"] == 2
    assert "store" in failed["lastError"]


def test_async_retry_of_a_parked_call_runs_it_once_the_function_is_back(
    make_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    gw = make_gateway(OFC_ASYNC_MAX_ATTEMPTS="2", OFC_ASYNC_RETRY_WINDOW="0s")
    call_id = park_a_failed_call(gw, tmp_path)
    eventually(lambda: queued_call(gw, call_id, "failed"), "the call to be parked as failed")
    system(gw, "POST", "/system/scale-function/store", json={"serviceName": "store", "replicas": 1})
    wait_available(gw, "store", 1)

    response = system(gw, "POST", "/system/queue/retry", json={"callId": call_id})

    assert (response.status_code, response.json()) == (200, {"requeued": 1})
    eventually(lambda: queued_call(gw, call_id, "done"), "the retried call to finish")
    assert (tmp_path / "calls.txt").read_bytes() == b"parked\n"


# -- malformed HTTP ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"HELLO GATEWAY\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nthis line has no colon\r\n\r\n",
        b"POST /function/echo HTTP/1.1\r\nHost: x\r\nContent-Length: many\r\n\r\n",
    ],
    ids=["garbage-request-line", "header-without-colon", "non-numeric-content-length"],
)
def test_malformed_request_answers_400_and_closes_the_connection(
    shared: RunningGateway, data: bytes
) -> None:
    received = raw_exchange(shared, data)  # returns only once the gateway has closed

    assert received.startswith(b"HTTP/1.1 400 ")


def test_request_with_headers_over_64_kb_answers_431(shared: RunningGateway) -> None:
    data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n"

    received = raw_exchange(shared, data)

    assert received.startswith(b"HTTP/1.1 431 ")
