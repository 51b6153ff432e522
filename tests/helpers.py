"""Small helpers shared by the tests: polling, /proc, and a recording HTTP server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from werkzeug.datastructures import Headers
from werkzeug.serving import WSGIRequestHandler, make_server

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, message: Callable[[], str] | str) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = message() if callable(message) else message
            raise AssertionError(f"after {timeout:g} s: {detail}")
        time.sleep(0.02)


def read_proc(path: str) -> bytes:
    """A /proc file's bytes, or ``b""`` when the process is gone."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


def child_pids(pid: int) -> set[int]:
    """Direct children of ``pid``, from every thread's children list."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children.update(int(p) for p in read_proc(f"{task}/children").split())
    return children


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = read_proc(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(b")", 1)[1].split()[0] != b"Z"


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


REPO = Path(__file__).resolve().parent.parent
OFC = str(REPO / "bin" / "ofc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cli:
    """Runs ``bin/ofc`` with one state directory and gateway port."""

    def __init__(self, state_dir: Path, port: int, venv_dir: Path, **env: str) -> None:
        self.state_dir = state_dir
        self.port = port
        self.builder_port = free_port()  # `ofc up` starts the builder too
        self.env = {
            **os.environ,
            "OFC_STATE_DIR": str(state_dir),
            "OFC_GATEWAY_PORT": str(port),
            "OFC_BUILDER_PORT": str(self.builder_port),
            "OFC_GIT_PORT": str(free_port()),
            "OFC_AUTH_PORT": str(free_port()),
            "OFC_ROUTER_PORT": str(free_port()),
            "OFC_VENV_DIR": str(venv_dir),
            **env,
        }
        self.env.pop("OPENFAAS_URL", None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(
        self, *args: str, cwd: Path | None = None, stdin: bytes = b"", timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [OFC, *args],
            cwd=cwd or REPO,
            env=self.env,
            input=stdin.decode(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc

    def ok(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        proc = self.run(*args, **kw)  # type: ignore[arg-type]
        assert proc.returncode == 0, f"ofc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class LoopbackWsgi:
    """A WSGI app served on a free 127.0.0.1 port from a background thread (the fakes' server)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self._server = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        self.port = int(self._server.server_port)
        # A short poll interval: shutdown() waits for the loop to look, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def stop_pid(proc: subprocess.Popen, timeout: float = 15.0) -> None:  # type: ignore[type-arg]
    """SIGTERM by PID, then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def start_service(
    module: str, env: dict[str, str], log_path: Path, health_url: str, timeout: float = 20.0
) -> subprocess.Popen:  # type: ignore[type-arg]
    """``python -m <module>`` from the repository with ``env`` over this environment, its
    output appended to ``log_path``; returns once ``health_url`` answers 200. A service that
    exits or never answers is stopped by its PID and reported with the end of its log."""
    import requests

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module], cwd=REPO, env={**os.environ, **env},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{module} exited early:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            if requests.get(health_url, timeout=1).status_code == 200:
                return proc
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    stop_pid(proc)
    raise RuntimeError(f"{module} did not answer {health_url} within {timeout:g} s:\n"
                       f"{log_path.read_text(errors='replace')[-3000:]}")  # fmt: skip
