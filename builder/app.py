"""The builder's composition root, its route table and its one error mapper.

The HTTP API is the OpenFaaS function builder's (``go-sdk`` ``builder`` package)::

    POST /build     body: a plain tar with com.openfaas.docker.config and context/
                    header: X-Build-Signature: sha256=<hex HMAC-SHA256 of the body, payload secret>
                    answer: BuildResult JSON {"log": [...], "image": "...", "status": ..., "duration": s}
    GET  /healthz   200 once listening

``/build`` answers 200 with ``status: success``; 500 with ``status: failure`` when the
build ran and failed (the log says why); and, before any build starts, 400 for a
malformed tar or config, 401 for a missing or wrong signature, 408 for an upload that
stalls, 413 for a body over ``OFC_BUILDER_MAX_BYTES`` and 429 when
``OFC_BUILDER_CONCURRENCY`` builds are running. Those refusals are BuildResults too,
with ``status: failure`` and the reason as the one log line.

Streaming (``?stream=true`` or ``Accept: application/x-ndjson``): once the request is
accepted the answer is 200 with one JSON object a line. Each progress line is a
BuildResult with ``status: in_progress`` and one log line, which is what the go-sdk's
``BuildWithStream`` reads (it decodes every line as a BuildResult, so ``log`` stays a
list). The last line is the BuildResult with ``success`` or ``failure``, the duration and
the closing line of the log; the ``log`` lists of all lines together are exactly the log
a non-streamed request gets.

A build that has started runs to its end even when the client goes away, so its slot
stays taken until then; ``OFC_BUILDER_TIMEOUT`` bounds it.

Order of checks, cheapest and least trusting first: size by Content-Length, signature
header present, a free build slot, the body read (size enforced again), the signature
verified over the exact bytes, and only then the tar opened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mmap
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from builder.backends import Backend, BuildFailed, BuildJob
from builder.backends.buildkit import BuildkitBackend
from builder.backends.local import LocalBackend
from builder.config import BuilderConfig, ConfigError
from builder.tarball import TarRefused, extract_build_tar
from runtime.artifacts import ArtifactStore
from runtime.httpcore.server import Handler, HttpServer, Request, Response
from runtime.httpcore.streams import BodyError, BodyStream
from runtime.venvs import VenvCache
from sdk.events import BuildResult
from sdk.signing import BUILD_SIGNATURE, verify

__all__ = ["Builder", "Endpoints", "build_router", "ensure_payload_secret", "make_build_handler"]

log = logging.getLogger(__name__)

SUCCESS, FAILURE, IN_PROGRESS = "success", "failure", "in_progress"
NDJSON = b"application/x-ndjson"
JSON_TYPE = [(b"content-type", b"application/json")]
# An upload that sends nothing for this long holds a build slot for nothing.
READ_STALL_SECONDS = 30.0
# A build's log is kept in memory and sent back whole; a runaway test printing without
# end must not take the builder down with it.
MAX_LOG_LINES = 5000
MAX_LINE_CHARS = 4096
STOP_GRACE_SECONDS = 10.0


class Refusal(Exception):
    """A request refused before its build started; answered as ``status`` with ``reason``."""

    def __init__(
        self, status: int, reason: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


def result_response(status: int, result: BuildResult) -> Response:
    """``result`` as the JSON answer of ``/build``."""
    return Response(status, list(JSON_TYPE), json.dumps(result.to_json()).encode() + b"\n")


# -- build slots ----------------------------------------------------------------------------------
class Slots:
    """At most ``limit`` builds at once, counted from upload to the end of the build."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.tasks: set[asyncio.Task[BuildResult]] = set()

    def take(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1

    async def cancel_all(self) -> None:
        """Cancel running builds (their pip and pytest processes are killed) and wait."""
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# -- one build --------------------------------------------------------------------------------------
class BuildRun:
    """One accepted build: its log, kept whole and, when streaming, handed out as it grows."""

    def __init__(self, backend: Backend, job: BuildJob, timeout: float, streaming: bool) -> None:
        self.backend = backend
        self.job = job
        self.timeout = timeout
        self.lines: list[str] = []
        self.omitted = 0
        self.queue: asyncio.Queue[str | None] | None = asyncio.Queue() if streaming else None

    def log(self, line: str) -> None:
        """Record one progress line (the backend's ``log`` callback)."""
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [line cut]"
        if len(self.lines) >= MAX_LOG_LINES:
            self.omitted += 1
            return
        self.lines.append(line)
        if self.queue is not None:
            self.queue.put_nowait(line)

    async def execute(self) -> BuildResult:
        """Run the backend; never raises except when cancelled."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        status = FAILURE
        try:
            async with asyncio.timeout(self.timeout) as limit:
                image = await self.backend.build(self.job, self.log)
            status, summary = SUCCESS, f"built {image}"
        except BuildFailed as exc:
            summary = f"build failed: {exc}"
        except Exception as exc:
            if isinstance(exc, TimeoutError) and limit.expired():
                summary = (
                    f"build failed: it took longer than {self.timeout:g} s (OFC_BUILDER_TIMEOUT)"
                )
            else:
                log.exception("build of %s failed in the builder", self.job.image)
                summary = "build failed: internal error in the builder (see the builder's log)"
        finally:
            if self.queue is not None:
                self.queue.put_nowait(None)  # end of progress lines
        duration = round(loop.time() - started, 3)
        if self.omitted:
            summary += f" ({self.omitted} log lines omitted after the first {MAX_LOG_LINES})"
        log.info("build of %s: %s in %.1f s", self.job.image, status, duration)
        return BuildResult(
            log=[*self.lines, summary], image=self.job.image, status=status, duration=duration
        )

    async def stream(self, task: asyncio.Task[BuildResult]) -> AsyncIterator[bytes]:
        """NDJSON: a BuildResult ``in_progress`` line per log line, then the final result."""
        assert self.queue is not None
        while True:
            line = await self.queue.get()
            lines = [line]
            while not self.queue.empty():  # send what has piled up in one write
                lines.append(self.queue.get_nowait())
            done = lines[-1] is None
            yield b"".join(self._progress(text) for text in lines if text is not None)
            if done:
                break
        result = await task
        final = BuildResult(
            log=result.log[-1:], image=result.image, status=result.status, duration=result.duration
        )
        yield json.dumps(final.to_json()).encode() + b"\n"

    def _progress(self, text: str) -> bytes:
        record = {"log": [text], "image": self.job.image, "status": IN_PROGRESS}
        return json.dumps(record).encode() + b"\n"


# -- endpoints --------------------------------------------------------------------------------------
def make_build_handler(
    backend: Backend,
    secret: str,
    slots: Slots,
    *,
    max_bytes: int,
    work_dir: Path,
    timeout: float,
) -> Handler:
    """``POST /build``: check, receive, verify, unpack, then build (see the module docstring)."""

    async def build(request: Request) -> Response:
        length = request.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise Refusal(413, f"the tar is larger than {max_bytes} bytes (OFC_BUILDER_MAX_BYTES)")
        signature = request.header(BUILD_SIGNATURE.lower().encode())
        if not signature:
            raise Refusal(
                401, f"missing {BUILD_SIGNATURE} header: sign the tar with the payload secret"
            )
        if not slots.take():
            raise Refusal(
                429,
                f"all {slots.limit} build slots are busy (OFC_BUILDER_CONCURRENCY); try again later",
                [(b"retry-after", b"5")],
            )
        work: Path | None = None
        try:
            work = Path(tempfile.mkdtemp(prefix="build-", dir=work_dir))
            job = await _receive_job(request, work, signature.decode("latin-1"), secret, max_bytes)
        except BaseException:
            slots.release()
            if work is not None:
                await asyncio.to_thread(shutil.rmtree, work, True)
            raise
        run = BuildRun(backend, job, timeout, streaming=_wants_stream(request))
        log.info("building %s for %s", job.image, request.client)
        run.log(f"building {job.image}")
        task = asyncio.create_task(_run_then_clean(run, slots, work))
        slots.tasks.add(task)
        task.add_done_callback(slots.tasks.discard)
        if run.queue is not None:
            return Response(200, [(b"content-type", NDJSON)], run.stream(task))
        result = await task
        return result_response(200 if result.status == SUCCESS else 500, result)

    return build


async def _receive_job(
    request: Request, work: Path, signature: str, secret: str, max_bytes: int
) -> BuildJob:
    """Spool the body to ``work``, verify its signature, unpack it; :class:`Refusal` if not."""
    tar_path, tree = work / "request.tar", work / "tree"
    await _receive(request.body, tar_path, max_bytes)
    if not await asyncio.to_thread(_signed, tar_path, signature, secret):
        raise Refusal(401, f"invalid {BUILD_SIGNATURE}: it does not match the tar")
    tree.mkdir()
    try:
        unpacked = await asyncio.to_thread(extract_build_tar, tar_path, tree, max_bytes=max_bytes)
    except TarRefused as exc:
        raise Refusal(400, f"malformed build request: {exc}") from None
    tar_path.unlink()
    config = unpacked.config
    return BuildJob(
        image=config.image,
        context=unpacked.context,
        build_args=config.build_args,
        platforms=config.platforms,
    )


async def _receive(body: BodyStream, path: Path, max_bytes: int) -> None:
    size = 0
    with open(path, "wb") as fh:
        while True:
            try:
                chunk = await asyncio.wait_for(body.read(), READ_STALL_SECONDS)
            except TimeoutError:
                raise Refusal(
                    408, f"the upload sent nothing for {READ_STALL_SECONDS:g} s"
                ) from None
            except BodyError:
                raise Refusal(400, "the request body was cut short") from None
            if not chunk:
                return
            size += len(chunk)
            if size > max_bytes:
                raise Refusal(
                    413, f"the tar is larger than {max_bytes} bytes (OFC_BUILDER_MAX_BYTES)"
                )
            fh.write(chunk)


def _signed(path: Path, signature: str, secret: str) -> bool:
    """Verify ``signature`` over the file's bytes, mapped rather than read onto the heap."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return verify(b"", signature, secret)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as body:
            return verify(body, signature, secret)  # type: ignore[arg-type]  # any buffer works


async def _run_then_clean(run: BuildRun, slots: Slots, work: Path) -> BuildResult:
    try:
        return await run.execute()
    finally:
        slots.release()
        await asyncio.to_thread(shutil.rmtree, work, True)  # best effort: scratch space


def _wants_stream(request: Request) -> bool:
    query = dict(parse_qsl(request.query.decode("latin-1")))
    if query.get("stream", "").lower() in ("true", "1"):
        return True
    return NDJSON in (request.header(b"accept") or b"")


def make_healthz_handler() -> Handler:
    """``GET /healthz``: 200 while the builder accepts requests."""

    async def healthz(_: Request) -> Response:
        return Response(200, [(b"content-type", b"text/plain; charset=utf-8")], b"OK\n")

    return healthz


# -- routes and errors ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    """Every handler the table routes to."""

    build: Handler
    healthz: Handler


def build_router(e: Endpoints) -> Handler:
    """The builder's request handler: the route table and the one error mapper."""
    routes: dict[str, dict[str, Handler]] = {
        "/build": {"POST": e.build},
        "/healthz": {"GET": e.healthz},
    }

    async def route(request: Request) -> Response:
        methods = routes.get(request.path)
        if methods is None:
            return _text(404, f"no such endpoint: {request.path}")
        handler = methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(methods)).encode()
            return _text(405, "method not allowed", [(b"allow", allow)])
        try:
            return await handler(request)
        except Refusal as exc:
            log.warning("refused %s %s from %s: %d %s", request.method, request.path,
                        request.client, exc.status, exc.reason)  # fmt: skip
            response = result_response(exc.status, BuildResult([exc.reason], "", FAILURE))
            response.headers.extend(exc.headers)
            return response
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            reason = "internal error in the builder (see the builder's log)"
            return result_response(500, BuildResult([reason], "", FAILURE))

    return route


def _text(status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    return Response(
        status, [(b"content-type", b"text/plain; charset=utf-8"), *headers], (text + "\n").encode()
    )


# -- composition root -------------------------------------------------------------------------------
def ensure_payload_secret(path: Path) -> str:
    """Read the payload secret from ``path``, first creating it when absent.

    A new secret is 32 random bytes as hex, written mode 0600 and linked into place, so
    a reader never sees a half-written file and two starting processes end with one
    secret. An empty file is refused: the builder must never accept a tar signed with
    an empty key.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
                log.info("generated a payload secret in %s", path)
            except FileExistsError:
                pass  # another process created it first; use theirs
        finally:
            os.unlink(tmp)
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(f"the payload secret file {path} is empty (OFC_PAYLOAD_SECRET_FILE)")
    return value


def make_backend(cfg: BuilderConfig) -> Backend:
    """The backend ``cfg.backend`` names (validated by :class:`BuilderConfig`).

    Raises :class:`ConfigError` when the ``buildkit`` backend's client or CA files are
    unusable.
    """
    if cfg.backend == "local":
        return LocalBackend(
            ArtifactStore(cfg.artifacts_dir),
            VenvCache(cfg.venv_dir, python=cfg.python, pip_args=cfg.pip_args),
        )
    if cfg.backend == "buildkit" and cfg.buildkit is not None:
        return BuildkitBackend.open(cfg.buildkit, cfg.buildkit_dir)
    raise ValueError(f"unknown backend {cfg.backend!r}")


class Builder:
    """The builder service: the payload secret, the backend, the HTTP server, wired together."""

    def __init__(self, cfg: BuilderConfig, backend: Backend | None = None) -> None:
        self.cfg = cfg
        secret = ensure_payload_secret(cfg.payload_secret_file)
        # Whatever a crashed run left behind belongs to no build now.
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
        cfg.work_dir.mkdir(parents=True, mode=0o700)
        self.slots = Slots(cfg.concurrency)
        endpoints = Endpoints(
            build=make_build_handler(
                backend or make_backend(cfg),
                secret,
                self.slots,
                max_bytes=cfg.max_bytes,
                work_dir=cfg.work_dir,
                timeout=cfg.build_timeout,
            ),
            healthz=make_healthz_handler(),
        )
        self.server = HttpServer(build_router(endpoints))
        self.port = 0

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self.port = await self.server.listen(self.cfg.host, self.cfg.port)
        log.info("builder (%s backend) listening on http://%s:%d",
                 self.cfg.backend, self.cfg.host, self.port)  # fmt: skip
        return self.port

    async def stop(self) -> None:
        """Stop accepting, give builds in flight a moment, then cancel the rest."""
        await self.server.close(grace=STOP_GRACE_SECONDS)
        await self.slots.cancel_all()
