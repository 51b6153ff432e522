"""github-event: signature first, then which deliveries start what (against a recording gateway)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sdk.signing import verify
from tests.fakes.github import (
    installation_payload,
    installation_repositories_payload,
    ping_payload,
    push_payload,
    requires_specs,
    validate_webhook,
    webhook_delivery,
)
from tests.functions.conftest import Context, Event, load_handler
from tests.helpers import Received, Recorder

WEBHOOK_SECRET = "webhook-secret-for-tests"
PAYLOAD_SECRET = "payload-secret-for-tests"
SHA = "a" * 40

pytestmark = requires_specs


class Gateway:
    """Answers like the gateway: 201/409 for delivery claims, 202 for queued calls."""

    def __init__(self) -> None:
        self.claimed: set[str] = set()
        self.queue_fails = False  # the gateway's queue refuses calls (e.g. its disk is full)

    def reply(self, request: Received) -> tuple[int, bytes]:
        if request.path.startswith("/function/pipeline-log/claim"):
            name = json.loads(request.body)["name"]
            if request.method == "DELETE":
                self.claimed.discard(name)
                return 200, b"released"
            if name in self.claimed:
                return 409, b"claimed"
            self.claimed.add(name)
            return 201, b"claimed"
        if request.path.startswith("/async-function/"):
            return (500, b"cannot store the call") if self.queue_fails else (202, b"")
        return 404, b"no such function"


@pytest.fixture
def gateway() -> Iterator[tuple[Recorder, Gateway]]:
    state = Gateway()
    with Recorder(state.reply) as recorder:
        yield recorder, state


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    (tmp_path / "github-webhook-secret").write_text(WEBHOOK_SECRET + "\n")
    (tmp_path / "payload-secret").write_text(PAYLOAD_SECRET)
    return tmp_path


@pytest.fixture
def make(gateway: tuple[Recorder, Gateway], secrets: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def make(**env: str) -> ModuleType:
        for key in ("customers_path", "customers_url", "validate_customers", "audit_url"):
            monkeypatch.delenv(key, raising=False)
        base = {"gateway_url": gateway[0].url, "secret_mount_path": str(secrets)}
        return load_handler("github-event", {**base, **env}, monkeypatch)

    return make


def deliver(
    fn: ModuleType,
    event: str,
    payload: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    assert validate_webhook(event, payload.get("action"), payload) == [], (
        "test payload must be what GitHub sends"
    )
    body, headers = webhook_delivery(event, payload, secret)
    for name in drop:
        headers.pop(name, None)
    return fn.handle(Event(body, headers), Context())


def queued(recorder: Recorder, function: str) -> list[Received]:
    return [r for r in recorder.received if r.path == f"/async-function/{function}"]


def test_push_is_queued_for_github_push_signed_with_the_payload_secret(make, gateway) -> None:  # type: ignore[no-untyped-def]
    result = deliver(make(), "push", push_payload(owner="alice", repo="fns", sha=SHA))
    assert result["statusCode"] == 202
    [call] = queued(gateway[0], "github-push")
    assert verify(call.body, call.headers.get("X-Cloud-Signature"), PAYLOAD_SECRET)
    push = json.loads(call.body)
    assert (push["owner"], push["repo"], push["sha"], push["ref"]) == (
        "alice",
        "fns",
        SHA,
        "refs/heads/main",
    )
    assert push["installation_id"] == 1001


@pytest.mark.parametrize(
    ("drop", "secret"),
    [
        (("X-Hub-Signature-256", "X-Hub-Signature"), WEBHOOK_SECRET),
        ((), "the-wrong-secret"),
        (("X-Hub-Signature",), "the-wrong-secret"),
    ],
    ids=["missing", "wrong-secret", "wrong-sha256-only"],
)
def test_delivery_without_a_valid_signature_is_401_and_starts_nothing(
    make, gateway, drop, secret
) -> None:  # type: ignore[no-untyped-def]
    result = deliver(make(), "push", push_payload(sha=SHA), secret=secret, drop=drop)
    assert result["statusCode"] == 401
    assert gateway[0].received == []


def test_legacy_sha1_signature_is_accepted_only_without_a_sha256_one(make, gateway) -> None:  # type: ignore[no-untyped-def]
    assert (
        deliver(make(), "push", push_payload(sha=SHA), drop=("X-Hub-Signature-256",))["statusCode"]
        == 202
    )


def test_ping_from_app_creation_answers_pong(make, gateway) -> None:  # type: ignore[no-untyped-def]
    result = deliver(make(), "ping", ping_payload())
    assert result["statusCode"] == 200
    assert result["body"].startswith("pong")
    assert gateway[0].received == []


def test_an_event_it_does_not_handle_is_202_ignored(make, gateway) -> None:  # type: ignore[no-untyped-def]
    body, headers = webhook_delivery("issues", {"action": "opened"}, WEBHOOK_SECRET)
    result = make().handle(Event(body, headers), Context())
    assert result["statusCode"] == 202
    assert "ignored" in result["body"]
    assert gateway[0].received == []


@pytest.mark.parametrize(
    "payload",
    [
        push_payload(sha=SHA, deleted=True),
        push_payload(sha=SHA, ref="refs/tags/v1.0.0"),
        push_payload(sha=SHA, commits=0),
    ],
    ids=["branch-deleted", "tag", "no-commits"],
)
def test_push_that_needs_no_build_starts_nothing(make, gateway, payload) -> None:  # type: ignore[no-untyped-def]
    result = deliver(make(), "push", payload)
    assert result["statusCode"] == 202
    assert "ignored" in result["body"]
    assert queued(gateway[0], "github-push") == []


def test_redelivery_of_a_handled_delivery_is_200_duplicate_and_starts_nothing(
    make, gateway
) -> None:  # type: ignore[no-untyped-def]
    fn = make()
    body, headers = webhook_delivery("push", push_payload(sha=SHA), WEBHOOK_SECRET)
    first = fn.handle(Event(body, headers), Context())
    again = fn.handle(Event(body, headers), Context())
    assert first["statusCode"] == 202
    assert again["statusCode"] == 200
    assert "duplicate" in again["body"]
    assert len(queued(gateway[0], "github-push")) == 1


def test_a_delivery_whose_work_could_not_be_queued_is_handled_when_redelivered(
    make, gateway
) -> None:  # type: ignore[no-untyped-def]
    recorder, state = gateway
    fn = make()
    body, headers = webhook_delivery("push", push_payload(sha=SHA), WEBHOOK_SECRET)
    state.queue_fails = True
    failed = fn.handle(Event(body, headers), Context())
    state.queue_fails = False
    redelivered = fn.handle(Event(body, headers), Context())

    assert failed["statusCode"] == 502  # GitHub shows it failed and offers a redelivery
    assert redelivered["statusCode"] == 202  # not taken for a duplicate: the push is built
    accepted = queued(recorder, "github-push")
    assert len(accepted) == 2  # the refused attempt, then the queued one
    releases = [r for r in recorder.received if r.method == "DELETE"]
    assert len(releases) == 1 and releases[0].path == "/function/pipeline-log/claim"


def test_org_owned_repository_is_built_under_the_org(make, gateway) -> None:  # type: ignore[no-untyped-def]
    deliver(make(), "push", push_payload(owner="acme-org", owner_type="Organization", sha=SHA))
    [call] = queued(gateway[0], "github-push")
    assert json.loads(call.body)["owner"] == "acme-org"


@pytest.mark.parametrize(
    ("owner", "status"),
    [("Alice", 202), ("ALICE", 202), ("mallory", 403)],
    ids=["listed", "other-case", "not-listed"],
)
def test_customers_list_is_checked_against_the_owner_in_any_case(
    make, gateway, tmp_path: Path, owner: str, status: int
) -> None:  # type: ignore[no-untyped-def]
    customers = tmp_path / "CUSTOMERS"
    customers.write_text("# who may build\nalice\n")
    result = deliver(
        make(customers_path=str(customers)), "push", push_payload(owner=owner, sha=SHA)
    )
    assert result["statusCode"] == status
    assert len(queued(gateway[0], "github-push")) == (1 if status == 202 else 0)


def test_app_uninstalled_garbage_collects_every_function_of_the_account(make, gateway) -> None:  # type: ignore[no-untyped-def]
    result = deliver(
        make(), "installation", installation_payload(action="deleted", account="Alice")
    )
    assert result["statusCode"] == 202
    [call] = queued(gateway[0], "garbage-collect")
    assert verify(call.body, call.headers.get("X-Cloud-Signature"), PAYLOAD_SECRET)
    assert json.loads(call.body) == {"owner": "Alice", "repo": "*", "functions": []}


def test_repositories_removed_garbage_collects_each_of_them(make, gateway) -> None:  # type: ignore[no-untyped-def]
    payload = installation_repositories_payload(
        action="removed", account="alice", removed=["one", "two"]
    )
    deliver(make(), "installation_repositories", payload)
    repos = sorted(json.loads(c.body)["repo"] for c in queued(gateway[0], "garbage-collect"))
    assert repos == ["one", "two"]


def test_installation_created_starts_nothing(make, gateway) -> None:  # type: ignore[no-untyped-def]
    result = deliver(
        make(), "installation", installation_payload(action="created", repositories=["fns"])
    )
    assert result["statusCode"] == 202
    assert queued(gateway[0], "garbage-collect") == queued(gateway[0], "github-push") == []


def test_setup_landing_after_installation_answers_200_without_a_signature(make, gateway) -> None:  # type: ignore[no-untyped-def]
    result = make().handle(
        Event(method="GET", query={"setup_action": "install", "installation_id": "1"}), Context()
    )
    assert result["statusCode"] == 200
    assert "Installation complete" in result["body"]


def test_body_that_is_not_json_is_400(make, gateway) -> None:  # type: ignore[no-untyped-def]
    from sdk.signing import sign

    body = b"not json"
    headers = {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "d",
        "X-Hub-Signature-256": sign(body, WEBHOOK_SECRET),
    }
    assert make().handle(Event(body, headers), Context())["statusCode"] == 400


def test_misconfigured_customers_answers_500_naming_the_setting(make) -> None:  # type: ignore[no-untyped-def]
    result = make(validate_customers="true").handle(Event(b"{}"), Context())
    assert result["statusCode"] == 500
    assert "validate_customers" in result["body"]
