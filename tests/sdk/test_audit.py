"""sdk.audit.Auditor: best-effort, signed audit events; and the recording HTTP server
the function tests use as Slack, audit-event or a gateway that fails on cue."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug.datastructures import Headers

from sdk.audit import Auditor
from sdk.events import AuditEvent
from sdk.function import check_cloud_signature
from tests.conftest import free_port

SECRET = "audit-test-secret"


@dataclass
class Received:
    method: str
    path: str
    headers: Headers  # case-insensitive
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


Reply = tuple[int, bytes]


class Recorder:
    """An HTTP server on loopback that records every request and answers ``reply(request)``.

    The default reply is 200 with an empty body; ``delay`` seconds are waited first.
    """

    def __init__(self, reply: Callable[[Received], Reply] | None = None, delay: float = 0.0):
        self.received: list[Received] = []
        self.reply = reply or (lambda request: (200, b""))
        self.delay = delay
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(
                    self.command,
                    self.path,
                    Headers(list(self.headers.items())),
                    self.rfile.read(length),
                )
                recorder.received.append(request)
                if recorder.delay:
                    time.sleep(recorder.delay)
                status, body = recorder.reply(request)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a client that timed out on purpose (delay) has gone

            do_GET = do_POST = do_PUT = do_DELETE = _any

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


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
