"""sdk.gateway.GatewayClient against a real gateway."""

from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sdk.gateway import GatewayClient, GatewayError
from tests.conftest import ECHO_HANDLER, RunningGateway


def test_invoke_never_sends_the_gateway_credentials_to_the_function(gateway: RunningGateway) -> None:
    gateway.deploy("echo", ECHO_HANDLER)
    seen = gateway.client.invoke("echo", b"x").json()["headers"]
    assert "authorization" not in seen


def test_invoke_async_never_sends_the_gateway_credentials_to_the_function(gateway: RunningGateway) -> None:
    gateway.deploy("echo", ECHO_HANDLER)
    received: queue.Queue[bytes] = queue.Queue()

    class Callback(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.put(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Callback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        call_id = gateway.client.invoke_async(
            "echo", b"x", callback_url=f"http://127.0.0.1:{server.server_port}/"
        )
        seen = json.loads(received.get(timeout=30))["headers"]
    finally:
        server.shutdown()
        server.server_close()
    assert "authorization" not in seen
    # The function sees the call id the caller was given, as with a synchronous call.
    assert seen["x-call-id"] == call_id
    assert seen["x-forwarded-for"] == "127.0.0.1"


def test_system_call_with_wrong_credentials_raises_401(gateway: RunningGateway) -> None:
    client = GatewayClient(gateway.url, "admin", "wrong")
    with pytest.raises(GatewayError) as err:
        client.list_functions()
    assert err.value.status == 401


def test_unreachable_gateway_raises_a_message_naming_the_url() -> None:
    client = GatewayClient("http://127.0.0.1:9", "admin", "pw", timeout=2)
    with pytest.raises(GatewayError, match=r"cannot reach the gateway at http://127.0.0.1:9"):
        client.list_functions()
