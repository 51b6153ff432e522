"""audit-event: signed events in, forwarded to a recording Slack on loopback; Slack's
failures never become the caller's."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sdk.audit import Auditor
from sdk.events import AuditEvent
from sdk.signing import sign
from tests.conftest import free_port
from tests.functions.conftest import Context, Event, load_handler
from tests.helpers import Recorder

SECRET = "audit-event-payload-secret"
EVENT = {
    "source": "garbage-collect",
    "message": "deleted 1 function(s): alice-fn",
    "owner": "alice",
    "repo": "fns",
}


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "payload-secret").write_text(SECRET)
    return folder


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, secrets: Path):  # type: ignore[no-untyped-def]
    def load(**env: str) -> ModuleType:
        monkeypatch.delenv("slack_url", raising=False)
        return load_handler("audit-event", {"secret_mount_path": str(secrets), **env}, monkeypatch)

    return load


@pytest.fixture
def slack() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


def post(fn: ModuleType, event: object, secret: str = SECRET) -> dict:
    body = json.dumps(event).encode()
    return fn.handle(Event(body, {"X-Cloud-Signature": sign(body, secret)}), Context())


def test_audit_event_forwards_the_event_to_slack_and_answers_done(load, slack: Recorder) -> None:  # type: ignore[no-untyped-def]
    fn = load(slack_url=slack.url + "/services/T000/B000/XXXX")

    reply = post(fn, EVENT)

    assert (reply["statusCode"], reply["body"]) == (200, "audit: done\n")
    [request] = slack.received
    assert (request.method, request.path) == ("POST", "/services/T000/B000/XXXX")
    assert request.json() == {
        "text": "[garbage-collect] alice/fns: deleted 1 function(s): alice-fn"
    }


def test_audit_event_without_slack_url_logs_the_event_and_answers_done(
    load, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    fn = load()

    with caplog.at_level(logging.INFO, logger="audit-event"):
        reply = post(fn, {"source": "github-event", "message": "installed\nfor alice"})

    assert (reply["statusCode"], reply["body"]) == (200, "audit: done\n")
    assert "audit [github-event] installed\\nfor alice" in caplog.text


def test_audit_event_escapes_slack_mentions_and_links(load, slack: Recorder) -> None:  # type: ignore[no-untyped-def]
    fn = load(slack_url=slack.url)

    post(fn, {**EVENT, "message": "<!channel> see <https://evil.example|here> & more"})

    assert (
        slack.received[0]
        .json()["text"]
        .endswith("&lt;!channel&gt; see &lt;https://evil.example|here&gt; &amp; more")
    )


@pytest.mark.parametrize("status", [404, 500, 503])
def test_audit_event_when_slack_refuses_answers_202_with_the_reason(load, status: int) -> None:  # type: ignore[no-untyped-def]
    with Recorder(lambda request: (status, b"no")) as slack:
        reply = post(load(slack_url=slack.url), EVENT)

    assert (reply["statusCode"], reply["body"]) == (
        202,
        f"audit: slack_url answered HTTP {status}\n",
    )


def test_audit_event_when_slack_is_unreachable_answers_202_without_the_url(load) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{free_port()}/services/SECRET-TOKEN"

    reply = post(load(slack_url=url), EVENT)

    assert (reply["statusCode"], reply["body"]) == (
        202,
        "audit: cannot reach slack_url (ConnectionError)\n",
    )


def test_audit_event_when_slack_is_slow_gives_up_and_answers_202(load) -> None:  # type: ignore[no-untyped-def]
    with Recorder(delay=1.0) as slack:
        fn = load(slack_url=slack.url)
        fn.SLACK_TIMEOUT = 0.1  # the 5 s of production, shortened for the test

        reply = post(fn, EVENT)

    assert (reply["statusCode"], reply["body"]) == (
        202,
        "audit: slack_url did not answer within 0.1 s\n",
    )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Cloud-Signature": sign(b"", SECRET)},
        {"X-Cloud-Signature": sign(b"{}", "other-secret")},
    ],
    ids=["missing", "over-empty-body", "other-secret"],
)
def test_audit_event_without_a_valid_signature_is_401_and_forwards_nothing(
    load, slack: Recorder, headers: dict[str, str]
) -> None:  # type: ignore[no-untyped-def]
    fn = load(slack_url=slack.url)

    reply = fn.handle(Event(json.dumps(EVENT).encode(), headers), Context())

    assert reply["statusCode"] == 401
    assert slack.received == []


@pytest.mark.parametrize(
    "event, message",
    [
        ({"message": "x"}, "source is required"),
        ({"source": "s"}, "message is required"),
        ({"source": "s", "message": 1}, "message has the wrong type"),
        ([], "must be a JSON object"),
    ],
    ids=["no-source", "no-message", "message-number", "list"],
)
def test_audit_event_malformed_event_is_400_saying_why(
    load, slack: Recorder, event: object, message: str
) -> None:  # type: ignore[no-untyped-def]
    reply = post(load(slack_url=slack.url), event)

    assert reply["statusCode"] == 400
    assert message in reply["body"]
    assert slack.received == []


def test_audit_event_get_is_405(load) -> None:  # type: ignore[no-untyped-def]
    reply = load().handle(Event(method="GET"), Context())

    assert (reply["statusCode"], reply["headers"]["Allow"]) == (405, "POST")


def test_audit_event_with_a_slack_url_that_is_not_http_answers_500_without_the_value(load) -> None:  # type: ignore[no-untyped-def]
    reply = post(load(slack_url="hooks.slack.com/services/SECRET-TOKEN"), EVENT)

    assert reply["statusCode"] == 500
    assert "slack_url" in reply["body"] and "SECRET-TOKEN" not in reply["body"]


def test_audit_event_accepts_what_the_sdk_auditor_sends(load, slack: Recorder) -> None:  # type: ignore[no-untyped-def]
    fn = load(slack_url=slack.url)
    replies: list[dict] = []

    class Session:
        """Hands the Auditor's request straight to the handler, as the gateway would."""

        def post(self, url: str, data: bytes, headers: dict[str, str], timeout: float) -> object:
            replies.append(fn.handle(Event(data, headers), Context()))
            return type("Response", (), {"status_code": replies[-1]["statusCode"]})()

    Auditor("http://gateway/function/audit-event", Session(), payload_secret=SECRET).post(
        AuditEvent("github-event", "push queued", "alice", "fns")
    )

    assert [r["statusCode"] for r in replies] == [200]
    assert slack.received[0].json() == {"text": "[github-event] alice/fns: push queued"}
