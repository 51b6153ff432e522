"""``git http-backend`` as a CGI program: git's own smart-HTTP server behind ours.

For each request git answers (``info/refs``, ``git-upload-pack``, ``git-receive-pack``)
one ``git http-backend`` process runs with the CGI variables of :func:`backend_env`.
The request body streams into its stdin and its stdout (CGI headers, a blank line, the
body) streams back to the client, both with back-pressure, so a push or a clone of any
size passes through without being held in memory.

What git needs of the CGI environment, and is easy to get wrong:

* ``CONTENT_LENGTH`` only when the request had one: git sends large bodies chunked,
  and without the variable http-backend reads stdin to its end.
* ``HTTP_CONTENT_ENCODING``: git gzips request bodies over 1 KiB; http-backend inflates
  them only when told.
* ``GIT_PROTOCOL`` and ``HTTP_GIT_PROTOCOL`` from the ``Git-Protocol`` header: protocol
  v2 (git 2.34+ copies ``HTTP_GIT_PROTOCOL`` itself; older ones read ``GIT_PROTOCOL``).
* No inherited ``GIT_*`` variable and no system or user configuration: the server's
  environment must not change what git serves (a git hook running us sets ``GIT_DIR``).

:func:`backend_env` and :class:`CgiHead` are plain functions of their inputs, so a
threaded WSGI server can use them as well (``tests/fakes/git_server.py`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from runtime.httpcore.streams import BodyError, BodyStream

__all__ = [
    "BackendAnswer",
    "BackendFailed",
    "CgiHead",
    "CgiRequest",
    "backend_env",
    "git_env",
    "start_backend",
]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024
# A client that sends nothing of its request body for this long is given up on: its
# process (and, for a push, the repository's lock) must not be held for ever.
READ_STALL_SECONDS = 60.0
# Answer chunks buffered ahead of a slow client before git is made to wait.
QUEUE_CHUNKS = 16
MAX_STDERR_BYTES = 16 * 1024


def git_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for running git that reads no system or user configuration and
    inherits no ``GIT_*`` variable."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        **extra,
    }


@dataclass(frozen=True)
class CgiRequest:
    """What http-backend is told of one HTTP request."""

    method: str
    path_info: str  # /<owner>/<repo>.git/<info/refs|git-upload-pack|git-receive-pack>
    query: str = ""
    content_type: str = ""
    content_length: str | None = None  # only when the request had the header
    content_encoding: str | None = None
    git_protocol: str | None = None  # the Git-Protocol header, e.g. "version=2"
    remote_addr: str = ""
    remote_user: str | None = None  # who we authenticated (http-backend logs it in reflogs)
    server_protocol: str = "HTTP/1.1"


def backend_env(request: CgiRequest, *, project_root: Path, home: Path) -> dict[str, str]:
    """The whole environment of ``git http-backend`` for ``request``: CGI variables over
    :func:`git_env`, serving every repository under ``project_root``."""
    env = git_env(
        home,
        GIT_PROJECT_ROOT=str(project_root),
        GIT_HTTP_EXPORT_ALL="1",  # serve without a git-daemon-export-ok file
        REQUEST_METHOD=request.method,
        PATH_INFO=request.path_info,
        QUERY_STRING=request.query,
        CONTENT_TYPE=request.content_type,
        REMOTE_ADDR=request.remote_addr,
        SERVER_PROTOCOL=request.server_protocol,
    )
    if request.content_length:
        env["CONTENT_LENGTH"] = request.content_length
    if request.content_encoding:
        env["HTTP_CONTENT_ENCODING"] = request.content_encoding
    if request.git_protocol:
        env["HTTP_GIT_PROTOCOL"] = env["GIT_PROTOCOL"] = request.git_protocol
    if request.remote_user:
        env["REMOTE_USER"] = request.remote_user
    return env


class CgiHead:
    """The CGI header block, fed one line at a time: ``Status:`` (200 when absent, as CGI
    says) and the other headers in order."""

    def __init__(self) -> None:
        self.status = 200
        self.reason = "OK"
        self.headers: list[tuple[str, str]] = []

    def feed(self, line: bytes) -> bool:
        """Take one line; True when it was the blank line that ends the block."""
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return True
        name, _, value = text.partition(":")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code, _, reason = value.partition(" ")
            self.status = int(code) if code.isdigit() else 502
            self.reason = reason or _phrase(self.status)
        else:
            self.headers.append((name, value))
        return False

    @property
    def status_line(self) -> str:
        """``"200 OK"``: the status as WSGI wants it."""
        return f"{self.status} {self.reason}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class BackendFailed(Exception):
    """http-backend ended without a header block (it could not start, or crashed)."""


@dataclass
class BackendAnswer:
    """A running http-backend's answer: its header block, then :attr:`body` as it comes.

    :attr:`finished` resolves once the process has exited and everything after it (the
    ``after`` callback of :func:`start_backend`) has run, whether or not the client read
    the answer to its end.
    """

    head: CgiHead
    body: AsyncIterator[bytes]
    finished: asyncio.Future[int]
    abandon: Callable[[], None]  # the client went away: stop forwarding, let git finish


async def start_backend(
    env: dict[str, str],
    body: BodyStream | None,
    *,
    cwd: Path,
    label: str,
    buffer_all: bool = False,
    after: Callable[[int], Awaitable[None]] | None = None,
) -> BackendAnswer:
    """Start ``git http-backend`` with ``env``, feed it ``body`` and return its answer
    once its header block is read; :class:`BackendFailed` if there is none.

    A supervising task owns the process from here on: it copies the request body in,
    the answer out and waits for the exit, independent of the client, then awaits
    ``after(returncode)``. ``buffer_all`` never makes git wait for a slow client (a push:
    its answer is small, and the repository's lock must not depend on the client);
    otherwise at most :data:`QUEUE_CHUNKS` chunks wait in memory. ``label`` names the
    request in log lines.
    """
    proc = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE if body is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=MAX_HEAD_BYTES,
    )
    run = _BackendRun(proc, label, buffer_all)
    head_ready: asyncio.Future[CgiHead | None] = asyncio.get_running_loop().create_future()
    finished = asyncio.ensure_future(run.supervise(body, head_ready, after))
    finished.add_done_callback(functools.partial(_log_crash, label))
    try:
        head = await asyncio.shield(head_ready)
    except asyncio.CancelledError:
        run.abandon()  # nobody will read the answer; git runs to its end on its own
        raise
    if head is None:
        await finished
        raise BackendFailed(f"git http-backend gave no answer for {label}")
    return BackendAnswer(head, run.chunks(), finished, run.abandon)


_END = b""


class _BackendRun:
    def __init__(self, proc: asyncio.subprocess.Process, label: str, buffer_all: bool) -> None:
        self.proc = proc
        self.label = label
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(0 if buffer_all else QUEUE_CHUNKS)
        self.abandoned = False
        self.broken = False  # the answer was cut short: the client must see it cut

    async def supervise(
        self,
        body: BodyStream | None,
        head_ready: asyncio.Future[CgiHead | None],
        after: Callable[[int], Awaitable[None]] | None,
    ) -> int:
        proc = self.proc
        assert proc.stdout is not None and proc.stderr is not None
        feeder = asyncio.ensure_future(self.feed(body)) if body is not None else None
        errors = asyncio.ensure_future(_read_capped(proc.stderr, MAX_STDERR_BYTES))
        try:
            head = await self.read_head(proc.stdout)
            head_ready.set_result(head)
            if head is not None:
                while chunk := await proc.stdout.read(CHUNK):
                    await self.forward(chunk)
            else:
                await proc.stdout.read()  # whatever is left; let the process finish
            returncode = await proc.wait()
        except BaseException:
            # Cancelled (the server is stopping) or broken: git must not outlive us, and
            # nothing may wait on a reader now (the queue could be full).
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            self.broken = True
            _drain(self.queue)
            self.queue.put_nowait(_END)
            await proc.wait()
            raise
        finally:
            if not head_ready.done():
                head_ready.set_result(None)
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
            if not self.broken:
                await self.forward(_END)
        detail = (await errors).decode(errors="replace").strip()
        if returncode != 0 or detail:
            log.warning("git http-backend %s exited %s: %s", self.label, returncode, detail)
        if after is not None:
            try:
                await after(returncode)
            except Exception:
                log.exception("%s: the work after git http-backend failed", self.label)
        return returncode

    async def read_head(self, stdout: asyncio.StreamReader) -> CgiHead | None:
        head, size = CgiHead(), 0
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # one line over the stream's limit
                return None
            size += len(line)
            if not line or size > MAX_HEAD_BYTES:
                return None
            if head.feed(line):
                return head

    async def feed(self, body: BodyStream) -> None:
        """Copy the request body into stdin, then close it: the end of the request."""
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            while chunk := await asyncio.wait_for(body.read(), READ_STALL_SECONDS):
                stdin.write(chunk)
                await stdin.drain()
        except TimeoutError:
            log.warning("%s: the client sent nothing for %g s; giving up on it",
                        self.label, READ_STALL_SECONDS)  # fmt: skip
        except BodyError:
            log.info("%s: the client went away before the end of its request", self.label)
        except (BrokenPipeError, ConnectionResetError):
            pass  # git stopped reading (it refused the request); its answer says why
        finally:
            stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await stdin.wait_closed()

    async def forward(self, chunk: bytes) -> None:
        if not self.abandoned:
            await self.queue.put(chunk)

    def abandon(self) -> None:
        """The client is gone: drop what waits for it and discard the rest of the answer,
        so git runs to its end (a push still lands, and its event is still sent)."""
        self.abandoned = True
        _drain(self.queue)

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.queue.get():
            yield chunk
        if self.broken:
            # The server cuts the connection: a truncated answer must not look whole.
            raise BodyError(f"git http-backend {self.label} stopped mid-answer")


def _drain(queue: asyncio.Queue[bytes]) -> None:
    while not queue.empty():
        queue.get_nowait()


def _log_crash(label: str, task: asyncio.Future[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("git http-backend %s failed", label, exc_info=task.exception())


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything ``stream`` gives, keeping the first ``limit`` bytes (stderr is drained
    to its end, so git never blocks writing to it)."""
    kept = bytearray()
    while chunk := await stream.read(CHUNK):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)
