"""garbage-collect: what may be deleted, checked against a real gateway; failures of the
gateway's deletes against a recording fake."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sdk.events import GarbageRequest
from sdk.function import check_cloud_signature
from sdk.openfaas import FunctionDeployment
from sdk.signing import sign
from tests.conftest import ECHO_HANDLER, RunningGateway, free_port
from tests.functions.conftest import Context, Event, load_handler, platform_secrets
from tests.helpers import Received, Recorder

SECRET = "garbage-collect-payload-secret"
OWNER, REPO = "com.openfaas.cloud.git-owner", "com.openfaas.cloud.git-repo"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[RunningGateway]:
    """One gateway for the module; each test deploys functions of its own owners."""
    state = tmp_path_factory.mktemp("garbage-collect") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    try:
        yield gw
    finally:
        gw.stop()


def deploy(gateway: RunningGateway, name: str, labels: dict[str, str] | None = None) -> None:
    # Listing and deleting need no running replica, so do not wait for one.
    gateway.deploy(name, ECHO_HANDLER, wait=False, labels=labels or {})


def owned(owner: str, repo: str, **extra: str) -> dict[str, str]:
    return {OWNER: owner, REPO: repo, **extra}


def deployed(gateway: RunningGateway) -> set[str]:
    return {f["name"] for f in gateway.client.list_functions()}


@pytest.fixture
def secrets(tmp_path: Path, gateway: RunningGateway) -> Path:
    return platform_secrets(tmp_path / "secrets", gateway.credentials, SECRET)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, secrets: Path, gateway: RunningGateway):  # type: ignore[no-untyped-def]
    def load(**env: str) -> ModuleType:
        monkeypatch.delenv("audit_url", raising=False)
        base = {"gateway_url": gateway.url, "secret_mount_path": str(secrets)}
        return load_handler("garbage-collect", {**base, **env}, monkeypatch)

    return load


@pytest.fixture
def fn(load) -> ModuleType:  # type: ignore[no-untyped-def]
    return load()


def collect(
    fn: ModuleType, owner: str, repo: str, functions: list[str], secret: str = SECRET
) -> dict:
    body = json.dumps({"owner": owner, "repo": repo, "functions": functions}).encode()
    reply = fn.handle(Event(body, {"X-Cloud-Signature": sign(body, secret)}), Context())
    if reply["statusCode"] == 200:
        reply["json"] = json.loads(reply["body"])
    return reply


# -- against the real gateway ----------------------------------------------------------------------


def test_gc_deletes_the_repos_functions_missing_from_the_stack_and_keeps_the_rest(
    fn: ModuleType, gateway: RunningGateway
) -> None:
    deploy(gateway, "carol-keep", owned("carol", "x"))
    deploy(gateway, "carol-gone", owned("carol", "x"))
    deploy(gateway, "carol-other-repo", owned("carol", "y"))

    reply = collect(fn, "carol", "x", ["keep"])

    assert reply["json"] == {"deleted": ["carol-gone"], "kept": ["carol-keep"], "failed": []}
    assert {"carol-keep", "carol-other-repo"} <= deployed(gateway)
    assert "carol-gone" not in deployed(gateway)


def test_gc_for_owner_a_never_deletes_a_b_c_owned_by_a_b(
    fn: ModuleType, gateway: RunningGateway
) -> None:
    # Owner `a` with stack key `b-c` and owner `a-b` with key `c` share the name `a-b-c`.
    deploy(gateway, "a-b-c", owned("a-b", "x"))
    deploy(gateway, "a-one", owned("a", "x"))

    reply = collect(fn, "a", "x", [])

    assert reply["json"] == {"deleted": ["a-one"], "kept": [], "failed": []}
    assert "a-b-c" in deployed(gateway)


def test_gc_star_removes_every_repo_of_the_owner_in_any_case_but_never_system_or_unlabelled(
    fn: ModuleType, gateway: RunningGateway
) -> None:
    deploy(gateway, "dave-f1", owned("DAVE", "r1"))
    deploy(gateway, "dave-f2", owned("dave", "r2"))
    deploy(gateway, "dave-f3", owned("Dave", "r3"))
    deploy(gateway, "dave-sys", owned("dave", "r1", role="openfaas-system"))
    deploy(gateway, "dave-bare")
    deploy(gateway, "davey-f1", owned("davey", "r1"))

    reply = collect(fn, "Dave", "*", ["F2"])

    assert reply["json"] == {"deleted": ["dave-f1", "dave-f3"], "kept": ["dave-f2"], "failed": []}
    assert {"dave-f2", "dave-sys", "dave-bare", "davey-f1"} <= deployed(gateway)


def test_gc_keeps_an_owned_function_whose_name_lacks_the_owner_prefix(
    fn: ModuleType, gateway: RunningGateway
) -> None:
    deploy(gateway, "legacy-erin", owned("erin", "x"))

    reply = collect(fn, "erin", "x", [])

    assert reply["json"] == {"deleted": [], "kept": ["legacy-erin"], "failed": []}


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Cloud-Signature": sign(b"", SECRET)}, {"X-Cloud-Signature": "sha1=" + "0" * 40}],
    ids=["missing", "over-empty-body", "sha1"],
)
def test_gc_without_a_valid_signature_is_401_and_deletes_nothing(
    fn: ModuleType, gateway: RunningGateway, headers: dict[str, str]
) -> None:
    deploy(gateway, "frank-fn", owned("frank", "x"))
    body = json.dumps({"owner": "frank", "repo": "*", "functions": []}).encode()

    reply = fn.handle(Event(body, headers), Context())

    assert reply["statusCode"] == 401
    assert "frank-fn" in deployed(gateway)


def test_gc_posts_a_signed_audit_event_when_audit_url_is_set(load, gateway: RunningGateway) -> None:  # type: ignore[no-untyped-def]
    deploy(gateway, "gina-fn", owned("gina", "x"))
    with Recorder() as audit:
        fn = load(audit_url=audit.url + "/function/audit-event")
        collect(fn, "gina", "x", [])

    [event] = audit.received
    check_cloud_signature(event.body, event.headers, SECRET)
    assert event.json() == {
        "source": "garbage-collect",
        "message": "garbage collection deleted 1 function(s): gina-fn",
        "owner": "gina",
        "repo": "x",
    }


def test_gc_when_the_gateway_cannot_list_is_502(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(gateway_url=f"http://127.0.0.1:{free_port()}")

    reply = collect(fn, "carol", "x", [])

    assert reply["statusCode"] == 502
    assert "cannot list functions" in reply["body"]


# -- delete failures, against a recording fake gateway ---------------------------------------------


def fake_gateway(request: Received) -> tuple[int, bytes]:
    if request.method == "GET" and request.path == "/system/functions":
        functions = [
            {"name": f"hal-{n}", "labels": owned("hal", "x"), "image": "i", "replicas": 1}
            for n in ("broken", "gone", "ok")
        ]
        return 200, json.dumps(functions).encode()
    if request.method == "DELETE" and request.path == "/system/functions":
        name = json.loads(request.body)["functionName"]
        return {"hal-broken": (500, b"disk full"), "hal-gone": (404, b"not found")}.get(
            name, (202, b"")
        )
    return 404, b""


def test_gc_reports_a_failed_delete_and_goes_on_with_the_others(load) -> None:  # type: ignore[no-untyped-def]
    with Recorder(fake_gateway) as gw:
        fn = load(gateway_url=gw.url)
        reply = collect(fn, "hal", "x", [])
        deletes = [json.loads(r.body)["functionName"] for r in gw.received if r.method == "DELETE"]

    assert reply["statusCode"] == 200
    assert reply["json"] == {
        "deleted": ["hal-gone", "hal-ok"],
        "kept": [],
        "failed": [{"name": "hal-broken", "error": "disk full"}],
    }
    assert deletes == ["hal-broken", "hal-gone", "hal-ok"]


def test_gc_uses_the_basic_auth_secrets_on_the_system_api(load, secrets: Path) -> None:  # type: ignore[no-untyped-def]
    user = (secrets / "basic-auth-user").read_text()
    password = (secrets / "basic-auth-password").read_text()
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    with Recorder(fake_gateway) as gw:
        collect(load(gateway_url=gw.url), "hal", "x", [])

    assert len(gw.received) == 4
    assert all(r.path == "/system/functions" for r in gw.received)
    assert {r.headers["Authorization"] for r in gw.received} == {expected}


# -- malformed requests and configuration -----------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not valid JSON"),
        (b'{"repo": "x"}', "owner is required"),
        (b'{"owner": "", "repo": "x"}', "owner must not be empty"),
        (b'{"owner": "carol", "repo": ""}', "repo must not be empty"),
        (b'{"owner": "carol", "repo": "x", "functions": "keep"}', "functions has the wrong type"),
        (b'{"owner": "carol", "repo": "x", "functions": [1]}', "functions has the wrong type"),
    ],
    ids=[
        "not-json",
        "no-owner",
        "empty-owner",
        "empty-repo",
        "functions-string",
        "functions-numbers",
    ],
)
def test_gc_malformed_request_is_400_saying_why(fn: ModuleType, body: bytes, message: str) -> None:
    reply = fn.handle(Event(body, {"X-Cloud-Signature": sign(body, SECRET)}), Context())

    assert reply["statusCode"] == 400
    assert message in reply["body"]


def test_gc_get_is_405(fn: ModuleType) -> None:
    reply = fn.handle(Event(method="GET"), Context())

    assert (reply["statusCode"], reply["headers"]["Allow"]) == (405, "POST")


def test_gc_without_gateway_credentials_answers_500_naming_the_secret(load, secrets: Path) -> None:  # type: ignore[no-untyped-def]
    (secrets / "basic-auth-password").unlink()

    reply = collect(load(), "carol", "x", [])

    assert reply["statusCode"] == 500
    assert "basic-auth-password" in reply["body"]


# -- the rules, one by one ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels, request_owner, request_repo, in_scope",
    [
        (owned("alice", "x"), "alice", "x", True),
        (owned("Alice", "x"), "ALICE", "x", True),
        (owned("alice", "x"), "alice", "*", True),
        (owned("alice", "y"), "alice", "x", False),
        (owned("alice", "X"), "alice", "x", False),
        (owned("alice-b", "x"), "alice", "x", False),
        (owned("alice", "x"), "alice-b", "x", False),
        (owned("alice", "x", role="openfaas-system"), "alice", "*", False),
        ({REPO: "x"}, "alice", "x", False),
        ({}, "alice", "*", False),
    ],
    ids=[
        "same",
        "owner-any-case",
        "star",
        "other-repo",
        "repo-case",
        "prefix-owner",
        "longer-owner",
        "system",
        "no-owner-label",
        "no-labels",
    ],
)
def test_gc_in_scope_rule(
    fn: ModuleType, labels: dict[str, str], request_owner: str, request_repo: str, in_scope: bool
) -> None:
    request = GarbageRequest(owner=request_owner, repo=request_repo, functions=[])

    assert fn.in_scope({"name": "n", "labels": labels}, request) is in_scope


@pytest.mark.parametrize(
    "name, keep, doomed",
    [
        ("alice-fn", [], True),
        ("alice-fn", ["fn"], False),
        ("alice-fn", ["FN"], False),
        ("alice-fn-2", ["fn"], True),
        ("fn", [], False),
        ("alicefn", [], False),
    ],
    ids=[
        "not-kept",
        "kept",
        "kept-any-case",
        "prefix-of-key-is-not-the-key",
        "no-prefix",
        "no-dash",
    ],
)
def test_gc_doomed_rule(fn: ModuleType, name: str, keep: list[str], doomed: bool) -> None:
    assert fn.doomed(name, GarbageRequest(owner="Alice", repo="x", functions=keep)) is doomed


# -- deployed as the platform deploys it -------------------------------------------------------------


@pytest.mark.slow
def test_gc_deployed_on_the_gateway_with_sdk_copied_in_deletes_through_the_gateway(
    gateway: RunningGateway,
) -> None:
    """The handler served by the python3-http template, ``sdk/`` beside it as faas-cli's
    ``configuration.copy`` puts it, secrets mounted by the gateway, called through it."""
    repo = Path(__file__).resolve().parents[2]
    files = {f"sdk/{p.name}": p.read_text() for p in (repo / "sdk").glob("*.py")}
    gateway.store_function(
        "garbage-collect:test",
        (repo / "garbage-collect" / "handler.py").read_text(),
        (repo / "garbage-collect" / "requirements.txt").read_text(),
        files,
    )
    user, password = gateway.credentials
    for name, value in (
        ("payload-secret", SECRET),
        ("basic-auth-user", user),
        ("basic-auth-password", password),
    ):
        gateway.client.create_secret(name, value.encode())
    gateway.client.deploy(
        FunctionDeployment(
            service="garbage-collect",
            image="garbage-collect:test",
            secrets=["payload-secret", "basic-auth-user", "basic-auth-password"],
            env_vars={"gateway_url": gateway.url},
            labels={"role": "openfaas-system"},
        )
    )
    gateway.wait_ready("garbage-collect")
    deploy(gateway, "ivy-old", owned("ivy", "x"))
    deploy(gateway, "ivy-new", owned("ivy", "x"))
    body = json.dumps({"owner": "ivy", "repo": "x", "functions": ["new"]}).encode()

    unsigned = gateway.client.invoke("garbage-collect", body)
    signed = gateway.client.invoke(
        "garbage-collect", body, headers={"X-Cloud-Signature": sign(body, SECRET)}
    )

    assert unsigned.status_code == 401
    assert (signed.status_code, signed.json()) == (
        200,
        {"deleted": ["ivy-old"], "kept": ["ivy-new"], "failed": []},
    )
    assert "garbage-collect" in deployed(gateway)
