"""A small HTTP/1.1 server on asyncio protocols and httptools (llhttp).

Why not Flask/waitress or aiohttp here: the gateway and the router proxy every call,
and on this machine kind a thread-per-request WSGI server spends 0.4-3.6 ms of CPU per
proxied request and aiohttp about 130 µs, while protocol callbacks over llhttp spend
about 35-40 µs (../shared/reference/hot-path-notes.md). This module does only what a
proxy needs: keep-alive, pipelining (answered in order), streamed bodies in both
directions with back-pressure, ``Expect: 100-continue``, limits on header size, and
idle timeouts. Applications are ``async def handler(request) -> Response``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from .streams import BodyError, BodyStream, WriteGate

log = logging.getLogger(__name__)

__all__ = ["Request", "Response", "Handler", "serve", "HttpServer"]

MAX_HEADER_BYTES = 64 * 1024
IDLE_TIMEOUT = 75.0  # below waitress' 120 s channel_timeout, like nginx's default

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class Request:
    """One parsed request. Header names are lower-case bytes; ``target`` is the raw request-target."""

    __slots__ = (
        "method",
        "target",
        "path",
        "query",
        "headers",
        "body",
        "client",
        "http_version",
        "keep_alive",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: BodyStream,
        client: str,
        http_version: str,
        keep_alive: bool = True,
    ) -> None:
        self.method = method
        self.target = target
        raw_path, _, query = target.partition(b"?")
        # Routing uses the decoded path; proxies forward ``target`` untouched, so an
        # encoded "%2F" reaches the function as sent.
        self.path = unquote(raw_path.decode("latin-1"))
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.http_version = http_version
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        """First value of header ``name`` (lower-case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


Body = bytes | BodyStream | AsyncIterator[bytes] | None


class Response:
    """Status, headers and a body: bytes, a :class:`BodyStream`, or an async iterator of chunks.

    ``length`` is the body length when known for a streamed body (sent as
    Content-Length); otherwise a streamed body goes out chunked.
    """

    __slots__ = ("status", "headers", "body", "length", "on_sent", "sent")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: Body = b"",
        length: int | None = None,
    ) -> None:
        self.status = status
        self.headers = headers if headers is not None else []
        self.body = body
        self.length = length
        # Called once the whole response is written or has failed (the proxy releases
        # its upstream connection here).
        self.on_sent: Callable[[bool], None] | None = None
        # Body bytes written so far (for access logs), framing not counted.
        self.sent = 0


Handler = Callable[[Request], Awaitable[Response]]


def _status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


class _Connection(asyncio.Protocol):
    """One client connection: parse, dispatch one request at a time, write in order."""

    def __init__(self, handler: Handler, server: HttpServer) -> None:
        self.handler = handler
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client = ""
        # Parse state of the message being read.
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.current: Request | None = None
        self.expect_continue = False
        # Requests parsed but not yet answered (pipelining), answered strictly in order.
        self.queue: list[Request] = []
        self.busy = False
        self.closing = False
        self.write_gate = WriteGate(self.loop)
        self.idle_handle: asyncio.TimerHandle | None = None
        self.reading_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        self._cancel_idle()
        if self.current is not None:
            self.current.body.abort(ConnectionError("client closed the connection"))
        for request in self.queue:
            request.body.abort(ConnectionError("client closed the connection"))
        self.write_gate.fail(ConnectionError("client closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._cancel_idle()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b"protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            # An exception raised in a parser callback arrives wrapped, as the context.
            if isinstance(exc.__context__, _HeaderTooLarge):
                self._reject(431, b"request headers too large")
            else:
                self._reject(
                    400, b"malformed HTTP request: " + str(exc).encode("latin-1", "replace")
                )

    def pause_writing(self) -> None:
        self.write_gate.pause()

    def resume_writing(self) -> None:
        self.write_gate.resume()

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _HeaderTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise _HeaderTooLarge()
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        body = BodyStream(self._pause_reading, self._resume_reading)
        request = Request(
            parser.get_method().decode("ascii"),
            self.url,
            self.headers,
            body,
            self.client,
            parser.get_http_version(),
            parser.should_keep_alive(),
        )
        if self.expect_continue and parser.get_http_version() == "1.1":
            body.on_first_read = self._send_continue
        self.current = request
        self.queue.append(request)
        if not self.busy:
            self.busy = True
            self.loop.create_task(self._serve())

    def on_body(self, chunk: bytes) -> None:
        if self.current is not None:
            self.current.body.feed(chunk)

    def on_message_complete(self) -> None:
        if self.current is not None:
            self.current.body.finish()
            self.current = None

    # -- flow control ----------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused and not self.closing:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused and not self.closing:
            self.reading_paused = False
            self.transport.resume_reading()

    def _send_continue(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _send(self, data: bytes) -> None:
        # uvloop raises RuntimeError, not ConnectionError, on a closed transport.
        if self.closing or self.transport is None:
            raise ConnectionError("client closed the connection")
        self.transport.write(data)

    async def _drain(self) -> None:
        if self.closing:
            # The client is gone: stop pulling the body from upstream.
            raise ConnectionError("client closed the connection")
        await self.write_gate.wait()

    def _arm_idle(self) -> None:
        self.idle_handle = self.loop.call_later(self.server.idle_timeout, self._idle_close)

    def _cancel_idle(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None

    def _idle_close(self) -> None:
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _reject(self, status: int, message: bytes) -> None:
        """Answer a protocol error and close: the stream can no longer be trusted."""
        self.closing = True
        if self.transport is None:
            return
        if not self.busy:
            self.transport.write(
                _status_line(status)
                + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n" % (len(message) + 1) + message + b"\n"
            )
        self.transport.close()

    # -- serving ---------------------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            while self.queue and not self.closing:
                request = self.queue[0]
                keep_alive = request.keep_alive and not self.server.shutting_down
                try:
                    response = await self.handler(request)
                except Exception:
                    log.exception("unhandled error serving %s %r", request.method, request.target)
                    response = Response(
                        500, [(b"content-type", b"text/plain; charset=utf-8")], b"internal error\n"
                    )
                # A request body the handler did not read must be drained before the
                # next request can be parsed on this connection; close instead when it
                # is large or still arriving.
                if not request.body.complete:
                    keep_alive = False
                await self._write_response(request, response, keep_alive)
                self.queue.pop(0)
                if not keep_alive:
                    self.closing = True
                    if self.transport is not None:
                        self.transport.close()
                    return
        finally:
            self.busy = False
            if not self.closing:
                self._arm_idle()

    async def _write_response(self, request: Request, response: Response, keep_alive: bool) -> None:
        transport = self.transport
        assert transport is not None
        ok = False
        if transport.is_closing():  # the client went away: nobody to answer
            if response.on_sent is not None:
                response.on_sent(False)
            return
        try:
            head = [_status_line(response.status)]
            for name, value in response.headers:
                head.append(name + b": " + value + b"\r\n")
            if not keep_alive:
                head.append(b"connection: close\r\n")
            body = response.body
            no_body = (
                request.method == "HEAD"
                or response.status in (204, 304)
                or (100 <= response.status < 200)
            )
            if isinstance(body, BodyStream) and body.fully_buffered:
                body = body.peek_all()
            if body is None:
                body = b""
            if isinstance(body, bytes):
                if response.status not in (204, 304):
                    length = (
                        response.length if no_body and response.length is not None else len(body)
                    )
                    head.append(b"content-length: %d\r\n" % length)
                head.append(b"\r\n")
                if no_body:
                    transport.write(b"".join(head))
                else:
                    transport.write(b"".join(head) + body)
                    response.sent = len(body)
                ok = True
                return
            chunked = response.length is None
            if chunked and not no_body:
                head.append(b"transfer-encoding: chunked\r\n")
            elif response.length is not None:
                head.append(b"content-length: %d\r\n" % response.length)
            head.append(b"\r\n")
            transport.write(b"".join(head))
            if no_body:
                ok = True
                return
            if isinstance(body, BodyStream):
                while True:
                    chunk = await body.read()
                    if not chunk:
                        break
                    self._send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    response.sent += len(chunk)
                    await self._drain()
            else:
                async for chunk in body:
                    if chunk:
                        self._send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                        response.sent += len(chunk)
                        await self._drain()
            if chunked:
                transport.write(b"0\r\n\r\n")
            ok = True
        except (BodyError, ConnectionError) as exc:
            # The upstream or the client went away mid-body: the only honest signal
            # left is to cut the connection so the client sees a truncated response.
            log.info("response to %s %r cut short: %s", request.method, request.target, exc)
            self.closing = True
            transport.close()
        finally:
            if response.on_sent is not None:
                response.on_sent(ok)


class _HeaderTooLarge(Exception):
    pass


class HttpServer:
    """A listening server; :meth:`close` stops accepting and waits for requests in flight."""

    def __init__(self, handler: Handler, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.handler = handler
        self.idle_timeout = idle_timeout
        self.connections: set[_Connection] = set()
        self.shutting_down = False
        self._server: asyncio.AbstractServer | None = None

    async def listen(self, host: str, port: int, *, backlog: int = 1024) -> int:
        """Bind and start accepting; returns the bound port (useful with ``port=0``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self.handler, self), host, port, backlog=backlog, reuse_address=True
        )
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace`` seconds, then close."""
        self.shutting_down = True
        if self._server is not None:
            self._server.close()
        deadline = asyncio.get_running_loop().time() + grace
        for conn in list(self.connections):
            if not conn.busy and conn.transport is not None:
                conn.transport.close()
        while any(c.busy for c in self.connections):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()


async def serve(handler: Handler, host: str, port: int) -> HttpServer:
    """Start an :class:`HttpServer` for ``handler`` on ``host:port``."""
    server = HttpServer(handler)
    await server.listen(host, port)
    return server
