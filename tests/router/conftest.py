"""Fixtures of the edge router's tests: a real ``python -m router`` in front of a real
gateway (``python -m runtime``) with functions deployed under users' names, and small
loopback upstreams standing in for edge-auth and the git remote.

The stand-ins run our own HTTP server (``runtime.httpcore``) on an event loop in a
background thread, so they can stream bodies both ways, stall, or break off an answer,
and they record every request they receive. Every process is stopped by its PID in
the fixture's teardown.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from runtime.httpcore.server import HttpServer, Request, Response
from tests.conftest import RunningGateway, free_port
from tests.helpers import start_service, stop_pid

OWNER = "com.openfaas.cloud.git-owner"
PLATFORM = {"openfaas-cloud": "1", "role": "openfaas-system"}

# What the function saw, to judge the pass-through: waitress keeps the raw
# request-target in REQUEST_URI (werkzeug decodes event.path).
PROBE_HANDLER = """
import hashlib
from flask import request

def handle(event, context):
    if event.query.get("bytes"):
        return {"statusCode": 200, "body": b"x" * int(event.query["bytes"])}
    status = int(event.query.get("status", "200"))
    return {
        "statusCode": status,
        "headers": {"X-Seen-Method": event.method, "X-Function": "probe"},
        "body": {
            "method": event.method,
            "path": event.path,
            "raw_uri": request.environ.get("REQUEST_URI"),
            "headers": {k.lower(): v for k, v in event.headers.items()},
            "length": len(event.body),
            "sha256": hashlib.sha256(event.body).hexdigest(),
        },
    }
"""

# A bare http.server as the function's process (envProcess): what reaches the wire,
# and answers waitress would not give (HEAD, 204, 304, a Set-Cookie of our choosing).
RAW_SERVER = """
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Raw(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        query = parse_qs(urlsplit(self.path).query)
        status = int(query.get("status", ["200"])[0])
        body = json.dumps(
            {"target": self.path, "headers": [[k.lower(), v] for k, v in self.headers.items()]}
        ).encode()
        self.send_response(status)
        if status == 304:
            self.send_header("etag", '"v1"')
            self.end_headers()
            return
        if status == 204:
            self.send_header("x-empty", "yes")
            self.end_headers()
            return
        for cookie in query.get("set-cookie", []):
            self.send_header("set-cookie", cookie)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ["bind_address"], int(os.environ["port"])), Raw).serve_forever()
"""

SeenRequest = tuple[str, bytes, dict[bytes, bytes]]  # method, raw target, headers (last wins)
StandInHandler = Callable[[Request], Awaitable[Response]]


class StandIn:
    """An HTTP server on 127.0.0.1 run by our own ``httpcore`` on a background event loop.

    ``handler`` answers each request; ``seen`` records (method, target, headers) of each.
    """

    def __init__(self, handler: StandInHandler) -> None:
        self.handler = handler
        self.seen: list[SeenRequest] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: HttpServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: Request) -> Response:
        self.seen.append((request.method, request.target, dict(request.headers)))
        return await self.handler(request)

    def __enter__(self) -> StandIn:
        self._thread.start()

        async def listen() -> int:
            self._server = HttpServer(self._handle)
            return await self._server.listen("127.0.0.1", 0)

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(1.0), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def targets(self) -> list[bytes]:
        return [target for _, target, _ in self.seen]


def text(status: int, body: bytes, *headers: tuple[bytes, bytes]) -> Response:
    return Response(status, [(b"content-type", b"text/plain"), *headers], body)


@dataclass
class RunningRouter:
    """A ``python -m router`` process and helpers to call it as a browser would."""

    port: int
    proc: subprocess.Popen  # type: ignore[type-arg]
    log_path: Path
    access_log: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def host(self, sub: str = "") -> str:
        """The Host header of ``<sub>.localhost:<port>`` (the bare domain without ``sub``)."""
        return f"{sub}.localhost:{self.port}" if sub else f"localhost:{self.port}"

    def call(
        self, method: str, host: str, target: str, headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:  # fmt: skip
        """``method`` on ``target`` with Host ``host``; ``target`` is sent exactly as given
        (requests would normalise it), and redirects are not followed."""
        prepared = requests.Request(
            method, self.url + "/", headers={"Host": host, **(headers or {})}, **kwargs
        ).prepare()
        prepared.url = self.url + target
        with requests.Session() as session:
            return session.send(prepared, timeout=60, allow_redirects=False)

    def get(self, host: str, target: str, **kwargs: Any) -> requests.Response:
        return self.call("GET", host, target, **kwargs)

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", timeout=10).text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_router(directory: Path, gateway_url: str, **env: str) -> RunningRouter:
    """Start ``python -m router`` in front of ``gateway_url``, logging into ``directory``.

    Pass ``OFC_ROUTER_GATEWAY_SECRETS_DIR`` for a real gateway (:func:`gateway_secrets`);
    edge-auth and the git remote default to ports nobody listens on.
    """
    port = free_port()
    access_log = directory / f"router-{port}-access.log"
    full_env = {
        "OFC_ROUTER_PORT": str(port),
        "OFC_PUBLIC_PORT": str(port),
        "OFC_DOMAIN": "localhost",
        "OFC_PUBLIC_SCHEME": "http",
        "OFC_STATE_DIR": str(directory / f"router-{port}-state"),
        "OFC_GATEWAY_URL": gateway_url,
        "OFC_AUTH_URL": f"http://127.0.0.1:{free_port()}",
        "OFC_GIT_URL": f"http://127.0.0.1:{free_port()}",
        "OFC_ROUTER_ACCESS_LOG": str(access_log),
        **env,
    }
    log_path = directory / f"router-{port}.log"
    proc = start_service("router", full_env, log_path, f"http://127.0.0.1:{port}/healthz")
    return RunningRouter(port, proc, log_path, access_log, full_env)


@pytest.fixture
def make_router(tmp_path: Path) -> Iterator[Callable[..., RunningRouter]]:
    """Factory: ``make_router(gateway_url, **env)``; every router is stopped by its PID."""
    started: list[RunningRouter] = []

    def make(gateway_url: str, **env: str) -> RunningRouter:
        started.append(start_router(tmp_path, gateway_url, **env))
        return started[-1]

    yield make
    for router in started:
        stop_pid(router.proc)


def gateway_secrets(gw: RunningGateway) -> str:
    return str(gw.state_dir / "secrets" / "gateway")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[RunningGateway]:
    """One gateway with users' and platform functions, shared by a test module:

    ``alice-probe`` (owner ``Alice``), ``alice-raw`` (owner ``alice``), ``bob-probe``
    (``bob``), ``al-ice-hello`` (``al-ice``), ``al-ice-cream`` (``al``),
    ``alice-internal`` (owner ``alice`` but a platform function), ``nolabel-probe`` (no
    owner), and the platform's ``github-event`` and ``dashboard``.
    """
    state = tmp_path_factory.mktemp("router-gateway") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    try:
        for name, owner in (("alice-probe", "Alice"), ("bob-probe", "bob"),
                            ("al-ice-hello", "al-ice"), ("al-ice-cream", "al")):  # fmt: skip
            gw.deploy(name, PROBE_HANDLER, labels={OWNER: owner})
        gw.deploy("alice-raw", RAW_SERVER, env_process="python function/handler.py",
                  labels={OWNER: "alice"})  # fmt: skip
        gw.deploy("alice-internal", PROBE_HANDLER, labels={OWNER: "alice", **PLATFORM})
        gw.deploy("nolabel-probe", PROBE_HANDLER)
        gw.deploy("github-event", PROBE_HANDLER, labels=PLATFORM)
        gw.deploy("dashboard", PROBE_HANDLER, labels=PLATFORM)
        yield gw
    finally:
        gw.stop()


# -- edge-auth and git remote stand-ins ---------------------------------------------------------

GOOD_SESSION = "good-session"  # edge-auth says 200 to session cookies starting with this
FORBIDDEN_SESSION = "forbidden-session"  # 403: signed in, not allowed
SESSION_LIFETIME = 3600


async def edge_auth_answer(request: Request) -> Response:
    """edge-auth's ``/q/`` decision from the session cookie; any other path echoes its target."""
    if request.path.rstrip("/") == "/q":
        cookie = b"; ".join(v for k, v in request.headers if k == b"cookie")
        if b"openfaas_cloud_token=" + GOOD_SESSION.encode() in cookie:
            expires = b"%d" % (time.time() + SESSION_LIFETIME)
            return text(200, b"OK\n", (b"x-ofc-user", b"alice"), (b"x-ofc-expires", expires))
        if b"openfaas_cloud_token=" + FORBIDDEN_SESSION.encode() in cookie:
            return text(403, b"not a customer\n")
        return text(401, b"no session: sign in first\n")
    return text(200, b"edge-auth page " + request.target)


async def git_answer(request: Request) -> Response:
    """The git remote stand-in: ``/git/upload`` reads the body as it comes and answers its
    length and SHA-256, ``/git/bytes?n=N`` streams N bytes, ``/git/slow`` answers after
    3 s, ``/git/cut?n=N`` promises N bytes and breaks off; other paths echo their target."""
    if request.path == "/git/upload":
        digest, length = hashlib.sha256(), 0
        while chunk := await request.body.read():
            digest.update(chunk)
            length += len(chunk)
        return text(200, b"%d %s" % (length, digest.hexdigest().encode()))
    if request.path == "/git/bytes":
        total = int(request.query.partition(b"=")[2])
        return Response(200, [(b"content-type", b"application/octet-stream")], _pattern(total))
    if request.path == "/git/slow":
        await asyncio.sleep(3)
        return text(200, b"late\n")
    if request.path == "/git/cut":
        promised = int(request.query.partition(b"=")[2])
        return Response(200, [(b"content-type", b"text/plain")], _cut_short(), length=promised)
    return text(200, b"git " + request.target)


CHUNK = 64 * 1024


def pattern_bytes(total: int) -> bytes:
    """What ``/git/bytes?n=total`` sends."""
    block = bytes(range(256)) * (CHUNK // 256)
    return (block * (total // CHUNK + 1))[:total]


async def _pattern(total: int) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < total:
        chunk = block[: min(CHUNK, total - sent)]
        sent += len(chunk)
        yield chunk


async def _cut_short() -> AsyncIterator[bytes]:
    yield b"a first part, then nothing" * 1000
    raise ConnectionError("the stand-in breaks off its answer")


class Hangup:
    """A TCP server on 127.0.0.1 that reads a request and closes the connection unanswered."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.recv(65536)

    def __enter__(self) -> Hangup:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def edge_auth() -> Iterator[StandIn]:
    with StandIn(edge_auth_answer) as server:
        yield server


@pytest.fixture(scope="module")
def git_remote() -> Iterator[StandIn]:
    with StandIn(git_answer) as server:
        yield server


@pytest.fixture(scope="module")
def router(
    tmp_path_factory: pytest.TempPathFactory,
    platform: RunningGateway,
    edge_auth: StandIn,
    git_remote: StandIn,
) -> Iterator[RunningRouter]:
    """A router in front of :func:`platform`, the edge-auth and git remote stand-ins."""
    server = start_router(
        tmp_path_factory.mktemp("router"),
        platform.url,
        OFC_ROUTER_GATEWAY_SECRETS_DIR=gateway_secrets(platform),
        OFC_AUTH_URL=edge_auth.url,
        OFC_GIT_URL=git_remote.url,
        OFC_ROUTER_UPSTREAM_TIMEOUT="10s",
    )
    yield server
    stop_pid(server.proc)
