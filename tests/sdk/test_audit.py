"""sdk.audit.Auditor: best-effort, signed audit events; and the recording HTTP server
the function tests use as Slack, audit-event or a gateway that fails on cue."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from sdk.audit import Auditor
from sdk.events import AuditEvent
from sdk.function import check_cloud_signature
from tests.conftest import free_port
from tests.helpers import Recorder

SECRET = "audit-test-secret"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


EVENT = AuditEvent("garbage-collect", "deleted 2 functions", "alexellis", "fns")


def test_auditor_posts_the_event_as_json_signed_with_the_payload_secret(recorder: Recorder) -> None:
    Auditor(recorder.url + "/audit", payload_secret=SECRET).post(EVENT)

    [request] = recorder.received
    assert (request.method, request.path) == ("POST", "/audit")
    assert request.json() == EVENT.to_json()
    assert request.headers["Content-Type"] == "application/json"
    check_cloud_signature(request.body, request.headers, SECRET)  # raises when wrong


def test_auditor_without_a_payload_secret_posts_unsigned(recorder: Recorder) -> None:
    Auditor(recorder.url).post(EVENT)

    [request] = recorder.received
    assert "X-Cloud-Signature" not in request.headers


@pytest.mark.parametrize("url", [None, "", "  "], ids=["none", "empty", "blank"])
def test_auditor_without_a_url_is_disabled_and_sends_nothing(url: str | None) -> None:
    auditor = Auditor(url)

    assert not auditor.enabled
    auditor.post(EVENT)  # no server at all: nothing may be attempted


def test_auditor_rejected_event_logs_a_warning_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Recorder(lambda request: (401, b"missing or invalid X-Cloud-Signature")) as rec:
        with caplog.at_level(logging.INFO, logger="sdk.audit"):
            Auditor(rec.url).post(EVENT)

    assert "not accepted: HTTP 401" in caplog.text


def test_auditor_unreachable_url_logs_without_the_url_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/hooks/T0KEN-in-path"

    with caplog.at_level(logging.INFO, logger="sdk.audit"):
        Auditor(url, payload_secret=SECRET).post(EVENT)

    assert "not delivered: ConnectionError" in caplog.text
    assert "T0KEN" not in caplog.text and SECRET not in caplog.text


def test_auditor_slow_receiver_is_abandoned_after_the_timeout() -> None:
    with Recorder(delay=2.0) as rec:
        started = time.monotonic()
        Auditor(rec.url, timeout=0.2).post(EVENT)
        elapsed = time.monotonic() - started

    assert elapsed < 1.5
