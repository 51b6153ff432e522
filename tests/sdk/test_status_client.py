"""sdk.status.StatusReporter: signed calls to github-status through a (recording) fake gateway."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sdk.events import CommitStatus
from sdk.gateway import GatewayClient
from sdk.signing import verify
from sdk.status import StatusReporter, truncate

SECRET = "payload-secret-value"
STATUS = CommitStatus(
    owner="alice",
    repo="fn",
    sha="d" * 40,
    context="hello",
    state="success",
    description="deployed: alice-hello",
    installation_id=1001,
    target_url="https://alice.example.com/hello",
)


@dataclass
class FakeGateway:
    """Records each request; answers ``status`` with ``body``."""

    url: str = ""
    status: int = 200
    body: bytes = b'{"reported": "hello"}'
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            fake.seen.append(("POST", self.path, dict(self.headers.items()), body))
            self.send_response(fake.status)
            self.send_header("Content-Length", str(len(fake.body)))
            self.end_headers()
            self.wfile.write(fake.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(5)


def reporter(url: str, *, enabled: bool = True) -> StatusReporter:
    return StatusReporter(GatewayClient(url, "admin", "gateway-password"), SECRET, enabled=enabled)


def test_report_posts_the_status_to_github_status_signed(gateway: FakeGateway) -> None:
    reporter(gateway.url).report(STATUS)
    ((method, path, headers, body),) = gateway.seen
    assert (method, path) == ("POST", "/function/github-status")
    assert verify(body, headers["X-Cloud-Signature"], SECRET)
    assert headers["Content-Type"] == "application/json"
    assert CommitStatus.from_json(json.loads(body)) == STATUS


def test_report_sends_no_gateway_credentials_to_the_function(gateway: FakeGateway) -> None:
    reporter(gateway.url).report(STATUS)
    assert "Authorization" not in gateway.seen[0][2]


def test_report_truncates_the_description_to_140_characters(gateway: FakeGateway) -> None:
    long = CommitStatus(**{**STATUS.to_json(), "description": "build failed: " + "x" * 300})
    reporter(gateway.url).report(long)
    sent = json.loads(gateway.seen[0][3])
    assert len(sent["description"]) == 140
    assert sent["description"].endswith("…")
    assert sent["description"].startswith("build failed: xxx")


def test_report_when_disabled_sends_nothing(gateway: FakeGateway) -> None:
    reporter(gateway.url, enabled=False).report(STATUS)
    assert gateway.seen == []


def test_report_when_the_function_fails_logs_and_does_not_raise(
    gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.status, gateway.body = 500, b"internal error"
    with caplog.at_level(logging.WARNING, logger="sdk.status"):
        reporter(gateway.url).report(STATUS)
    assert "not reported: github-status answered 500: internal error" in caplog.text
    assert "alice/fn@dddddddddddd hello=success" in caplog.text


def test_report_when_the_gateway_is_down_logs_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="sdk.status"):
        reporter(f"http://127.0.0.1:{port}").report(STATUS)
    assert "cannot reach the gateway" in caplog.text
    assert SECRET not in caplog.text


def test_report_logs_no_secret_or_signature(
    gateway: FakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.status = 401
    with caplog.at_level(logging.DEBUG):
        reporter(gateway.url).report(STATUS)
    assert SECRET not in caplog.text
    assert gateway.seen[0][2]["X-Cloud-Signature"] not in caplog.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ""),
        ("short", "short"),
        ("x" * 140, "x" * 140),
        ("x" * 141, "x" * 139 + "…"),
        ("é" * 200, "é" * 139 + "…"),
    ],
    ids=["empty", "short", "exactly-140", "141", "multibyte-counts-characters"],
)
def test_truncate(text: str, expected: str) -> None:
    assert truncate(text) == expected
    assert len(truncate(text)) <= 140
