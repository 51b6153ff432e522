"""github-push: only the build branch is built; it says pending on the commit and queues git-tar."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sdk.events import PushEvent
from sdk.signing import sign, verify
from tests.functions.conftest import Context, Event, load_handler
from tests.helpers import Received, Recorder

SECRET = "payload-secret-for-tests"
SHA = "b" * 40


def reply(request: Received) -> tuple[int, bytes]:
    return (
        (202, b"") if request.path.startswith("/async-function/") else (200, b'{"reported": "x"}')
    )


@pytest.fixture
def gateway() -> Iterator[Recorder]:
    with Recorder(reply) as recorder:
        yield recorder


@pytest.fixture
def make(gateway: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    (tmp_path / "payload-secret").write_text(SECRET)

    def make(**env: str) -> ModuleType:
        monkeypatch.delenv("build_branch", raising=False)
        base = {
            "gateway_url": gateway.url,
            "secret_mount_path": str(tmp_path),
            "report_status": "true",
        }
        return load_handler("github-push", {**base, **env}, monkeypatch)

    return make


def push(
    ref: str = "refs/heads/main", default_branch: str = "main", delivery: str = "d-1"
) -> bytes:
    event = PushEvent(
        delivery_id=delivery,
        owner="Alice",
        owner_id=1,
        repo="fns",
        full_name="Alice/fns",
        clone_url="https://github.com/Alice/fns.git",
        html_url="https://github.com/Alice/fns",
        private=False,
        ref=ref,
        sha=SHA,
        default_branch=default_branch,
        installation_id=5,
    )
    return json.dumps(event.to_json()).encode()


def call(fn: ModuleType, body: bytes, secret: str = SECRET) -> dict:  # type: ignore[type-arg]
    return fn.handle(Event(body, {"X-Cloud-Signature": sign(body, secret)}), Context())


def test_push_to_the_default_branch_reports_pending_and_queues_git_tar(
    make, gateway: Recorder
) -> None:  # type: ignore[no-untyped-def]
    body = push()
    assert call(make(), body)["statusCode"] == 202
    [status] = [r for r in gateway.received if r.path == "/function/github-status"]
    reported = json.loads(status.body)
    assert (reported["context"], reported["state"], reported["sha"]) == (
        "stack-deploy",
        "pending",
        SHA,
    )
    assert verify(status.body, status.headers.get("X-Cloud-Signature"), SECRET)
    [queued] = [r for r in gateway.received if r.path == "/async-function/git-tar"]
    assert queued.body == body
    assert verify(queued.body, queued.headers.get("X-Cloud-Signature"), SECRET)
    assert queued.headers.get("X-Call-Id") == "git-tar-d-1"


@pytest.mark.parametrize(
    ("ref", "default_branch", "env", "built"),
    [
        ("refs/heads/main", "main", {}, True),
        ("refs/heads/feature", "main", {}, False),
        ("refs/heads/trunk", "trunk", {}, True),
        ("refs/heads/release", "main", {"build_branch": "release"}, True),
        ("refs/heads/main", "main", {"build_branch": "release"}, False),
    ],
    ids=[
        "default-branch",
        "other-branch",
        "default-named-trunk",
        "configured-branch",
        "default-not-configured",
    ],
)
def test_only_the_build_branch_is_built(
    make, gateway: Recorder, ref: str, default_branch: str, env: dict, built: bool
) -> None:  # type: ignore[no-untyped-def,type-arg]
    result = call(make(**env), push(ref, default_branch))
    assert result["statusCode"] == 202
    assert bool([r for r in gateway.received if r.path == "/async-function/git-tar"]) is built
    if not built:
        assert "not the build branch" in result["body"]
        assert gateway.received == []  # no status either: nothing was started


def test_bad_signature_is_401_and_starts_nothing(make, gateway: Recorder) -> None:  # type: ignore[no-untyped-def]
    assert call(make(), push(), secret="wrong")["statusCode"] == 401
    assert gateway.received == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"[]", "JSON object"),
        (b'{"owner": "a"}', "is required"),
        (push().replace(SHA.encode(), b"xyz"), "40-character"),
    ],
    ids=["empty", "not-an-object", "missing-fields", "bad-sha"],
)
def test_malformed_push_is_400_saying_why(
    make, gateway: Recorder, body: bytes, reason: str
) -> None:  # type: ignore[no-untyped-def]
    result = call(make(), body)
    assert result["statusCode"] == 400
    assert reason in result["body"]
