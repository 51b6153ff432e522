"""deploy/kubernetes/registry-forward.py: the builder pod's path to the internal registry.

Started as the pod starts it (``python registry-forward.py`` with its two variables), in
front of a real HTTP server on loopback standing in for the registry.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import free_port, stop_pid, wait_until

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "kubernetes" / "registry-forward.py"


class Blobs(http.server.BaseHTTPRequestHandler):
    """A registry stand-in: PUT stores a body, GET returns it (records what it got)."""

    store: dict[str, bytes] = {}

    def do_PUT(self) -> None:  # noqa: N802
        self.store[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        body = self.store.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Blobs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def start(listen: str, target: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            env={
                "OFC_FORWARD_LISTEN": listen,
                "OFC_FORWARD_TARGET": target,
                "PATH": "/usr/bin:/bin",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_forwarder_carries_a_push_and_a_pull_to_the_registry(registry: int, tmp_path: Path) -> None:
    port = free_port()
    proc = start(f"127.0.0.1:{port}", f"127.0.0.1:{registry}", tmp_path / "fwd.log")
    try:
        wait_until(
            lambda: "->" in (tmp_path / "fwd.log").read_text(),
            10,
            lambda: (tmp_path / "fwd.log").read_text(),
        )
        blob = bytes(range(256)) * 4096  # 1 MiB, across many reads
        with requests.Session() as s:
            put = s.put(f"http://127.0.0.1:{port}/v2/ofc/blobs/one", data=blob, timeout=10)
            assert put.status_code == 201
            got = s.get(f"http://127.0.0.1:{port}/v2/ofc/blobs/one", timeout=10)
        assert got.status_code == 200 and got.content == blob
        assert Blobs.store["/v2/ofc/blobs/one"] == blob
    finally:
        stop_pid(proc)


def test_forwarder_closes_the_client_when_the_registry_is_down(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    proc = start(f"127.0.0.1:{port}", f"127.0.0.1:{dead}", tmp_path / "fwd.log")
    try:
        wait_until(
            lambda: "->" in (tmp_path / "fwd.log").read_text(), 10, "forwarder did not start"
        )
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/v2/", timeout=10)
        wait_until(
            lambda: "cannot reach" in (tmp_path / "fwd.log").read_text(), 10, "no reason logged"
        )
    finally:
        stop_pid(proc)


@pytest.mark.parametrize(
    "listen", ["", "8080", "127.0.0.1:http"], ids=["unset", "no-host", "named-port"]
)
def test_forwarder_refuses_a_malformed_address(listen: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"OFC_FORWARD_LISTEN": listen, "OFC_FORWARD_TARGET": "registry:5000"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "OFC_FORWARD_LISTEN" in done.stderr and "expected host:port" in done.stderr
