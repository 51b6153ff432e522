"""list-functions against a real gateway holding functions of several owners, a system
function and an unlabelled one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlencode

import pytest

from sdk.openfaas import FunctionDeployment
from sdk.signing import sign
from tests.conftest import ECHO_HANDLER, RunningGateway, free_port
from tests.functions.conftest import Context, Event, load_handler, platform_secrets

SECRET = "list-functions-payload-secret"
P = "com.openfaas.cloud."


def labels(owner: str, repo: str, deploytime: int, **extra: str) -> dict[str, str]:
    return {
        P + "git-owner": owner,
        P + "git-repo": repo,
        P + "git-sha": f"{deploytime:040x}",
        P + "git-branch": "main",
        P + "git-deploytime": str(deploytime),
        P + "git-private": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[RunningGateway]:
    """Functions of Alice (labelled in three spellings), of ``alice-b`` (whose ``x`` is
    named ``alice-b-x``, like a stack key ``b-x`` of Alice's), a system function and an
    unlabelled one. Deployed without waiting for replicas: listing needs none."""
    state = tmp_path_factory.mktemp("list-functions") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    try:
        gw.deploy("alice-old", ECHO_HANDLER, wait=False, labels=labels("alice", "fns", 100))
        gw.deploy(
            "alice-new",
            ECHO_HANDLER,
            wait=False,
            labels=labels("Alice", "web", 300, **{P + "git-private": "1"}),
        )
        gw.deploy("alice-b-x", ECHO_HANDLER, wait=False, labels=labels("alice-b", "x", 400))
        gw.deploy(
            "alice-sys",
            ECHO_HANDLER,
            wait=False,
            labels=labels("alice", "fns", 500, role="openfaas-system"),
        )
        gw.deploy("plain", ECHO_HANDLER, wait=False)
        image = "registry.example.com:5000/alice/alice-mid:latest-main-04b8e44"
        gw.store_function(image, ECHO_HANDLER)
        gw.client.deploy(
            FunctionDeployment(service="alice-mid", image=image, labels=labels("ALICE", "fns", 200))
        )
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def secrets(tmp_path: Path, gateway: RunningGateway) -> Path:
    return platform_secrets(tmp_path / "secrets", gateway.credentials, SECRET)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, secrets: Path, gateway: RunningGateway):  # type: ignore[no-untyped-def]
    def load(**env: str) -> ModuleType:
        monkeypatch.delenv("function_url_template", raising=False)
        base = {"gateway_url": gateway.url, "secret_mount_path": str(secrets)}
        return load_handler("list-functions", {**base, **env}, monkeypatch)

    return load


@pytest.fixture
def fn(load) -> ModuleType:  # type: ignore[no-untyped-def]
    return load()


def list_get(fn: ModuleType, user: str, secret: str = SECRET) -> dict:
    signature = sign(urlencode({"user": user}).encode(), secret)
    return fn.handle(
        Event(method="GET", query={"user": user}, headers={"X-Cloud-Signature": signature}),
        Context(),
    )


def names(reply: dict) -> list[str]:
    assert reply["statusCode"] == 200, reply["body"]
    return [f["name"] for f in json.loads(reply["body"])]


def test_list_functions_returns_the_owners_functions_newest_first(fn: ModuleType) -> None:
    assert names(list_get(fn, "alice")) == ["alice-new", "alice-mid", "alice-old"]


@pytest.mark.parametrize("user", ["alice", "ALICE", "Alice"], ids=["lower", "upper", "title"])
def test_list_functions_matches_the_owner_label_in_any_case(fn: ModuleType, user: str) -> None:
    assert names(list_get(fn, user)) == ["alice-new", "alice-mid", "alice-old"]


def test_list_functions_never_lists_another_owner_with_a_prefix_like_name(fn: ModuleType) -> None:
    assert "alice-b-x" not in names(list_get(fn, "alice"))
    assert names(list_get(fn, "alice-b")) == ["alice-b-x"]


def test_list_functions_never_lists_system_functions(fn: ModuleType) -> None:
    assert "alice-sys" not in names(list_get(fn, "alice"))


def test_list_functions_describes_each_function(fn: ModuleType) -> None:
    functions = {f["name"]: f for f in json.loads(list_get(fn, "alice")["body"])}

    assert functions["alice-new"] == {
        "name": "alice-new",
        "short_name": "new",
        "repo": "web",
        "sha": f"{300:040x}",
        "branch": "main",
        "deploy_time": 300,
        "private": True,
        "replicas": 1,
        "available_replicas": functions["alice-new"]["available_replicas"],
        "invocations": 0,
        "image": "alice-new:latest",
        # Without a template, the gateway's own URL for the function.
        "url": f"{fn.LISTER.cfg.gateway_url}/function/alice-new",
    }
    assert functions["alice-old"]["private"] is False
    assert functions["alice-mid"]["image"] == "alice/alice-mid:latest-main-04b8e44"


def test_list_functions_builds_urls_from_the_template(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(function_url_template="https://{owner}.example.com/{short_name}")

    urls = [f["url"] for f in json.loads(list_get(fn, "Alice")["body"])]

    assert urls == [f"https://alice.example.com/{s}" for s in ("new", "mid", "old")]


def test_list_functions_post_takes_the_user_from_the_body(fn: ModuleType) -> None:
    body = json.dumps({"user": "alice"}).encode()

    reply = fn.handle(Event(body, {"X-Cloud-Signature": sign(body, SECRET)}), Context())

    assert names(reply) == ["alice-new", "alice-mid", "alice-old"]


def test_list_functions_for_an_owner_without_functions_is_an_empty_list(fn: ModuleType) -> None:
    assert names(list_get(fn, "nobody")) == []


@pytest.mark.parametrize(
    "event",
    [
        Event(method="GET", query={"user": "alice"}),
        Event(
            method="GET",
            query={"user": "alice"},
            headers={"X-Cloud-Signature": sign(b"user=bob", SECRET)},
        ),
        Event(
            method="GET", query={"user": "alice"}, headers={"X-Cloud-Signature": sign(b"", SECRET)}
        ),
        Event(b'{"user": "alice"}', {"X-Cloud-Signature": sign(b'{"user": "bob"}', SECRET)}),
    ],
    ids=[
        "get-unsigned",
        "get-signed-for-another-user",
        "get-signed-empty-body",
        "post-signed-other-body",
    ],
)
def test_list_functions_without_a_valid_signature_is_401(fn: ModuleType, event: Event) -> None:
    assert fn.handle(event, Context())["statusCode"] == 401


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"user": ""}', b'{"user": 7}', b"[]"],
    ids=["no-user", "empty-user", "number", "list"],
)
def test_list_functions_post_without_a_user_is_400(fn: ModuleType, body: bytes) -> None:
    reply = fn.handle(Event(body, {"X-Cloud-Signature": sign(body, SECRET)}), Context())

    assert reply["statusCode"] == 400
    assert "user" in reply["body"]


def test_list_functions_get_without_a_user_is_400(fn: ModuleType) -> None:
    reply = fn.handle(
        Event(method="GET", headers={"X-Cloud-Signature": sign(b"user=", SECRET)}), Context()
    )

    assert reply["statusCode"] == 400
    assert "user is required" in reply["body"]


def test_list_functions_delete_is_405(fn: ModuleType) -> None:
    reply = fn.handle(Event(method="DELETE"), Context())

    assert (reply["statusCode"], reply["headers"]["Allow"]) == (405, "GET, HEAD, POST")


def test_list_functions_when_the_gateway_is_down_is_502(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(gateway_url=f"http://127.0.0.1:{free_port()}")

    reply = list_get(fn, "alice")

    assert reply["statusCode"] == 502
    assert "cannot reach the gateway" in reply["body"]


def test_list_functions_with_wrong_gateway_credentials_is_502_without_them(
    load, secrets: Path
) -> None:  # type: ignore[no-untyped-def]
    (secrets / "basic-auth-password").write_text("wrong-password-value")
    fn = load()

    reply = list_get(fn, "alice")

    assert reply["statusCode"] == 502
    assert "wrong-password-value" not in reply["body"]


def test_list_functions_with_an_unknown_url_placeholder_answers_500_naming_the_variable(
    load,
) -> None:  # type: ignore[no-untyped-def]
    fn = load(function_url_template="https://{user}.example.com/{short_name}")

    reply = list_get(fn, "alice")

    assert reply["statusCode"] == 500
    assert "function_url_template" in reply["body"] and "'user'" in reply["body"]


@pytest.mark.parametrize(
    "image, shown",
    [
        ("registry.example.com:5000/alice/fn:1", "alice/fn:1"),
        ("127.0.0.1:5000/ofc/echo:dev", "ofc/echo:dev"),
        ("localhost/fn:1", "fn:1"),
        ("docker.io/ofcommunity/alice-repo-fn:latest", "ofcommunity/alice-repo-fn:latest"),
        ("alice/fn:1", "alice/fn:1"),
        ("fn:latest", "fn:latest"),
    ],
    ids=["host-port", "ip-port", "localhost", "docker-hub-host", "no-host", "bare"],
)
def test_public_image_strips_only_a_registry_host(fn: ModuleType, image: str, shown: str) -> None:
    assert fn.public_image(image) == shown
