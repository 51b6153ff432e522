"""A pooled HTTP/1.1 client for proxying to function replicas on loopback.

Each upstream (host, port) keeps a small stack of idle keep-alive connections. The
pitfalls this handles (../shared/reference/hot-path-notes.md):

* idle connections are capped per upstream and expire before the upstream's own
  keep-alive timeout (waitress closes idle channels after 120 s), so a pool never
  pins a replica's connection limit;
* a pooled connection the upstream already closed fails on reuse: the request is
  retried once on a fresh connection, and only when no byte of the response arrived
  and the request body can be replayed;
* a response to HEAD has no body whatever its Content-Length says: the parser is not
  told, so the connection is finished at the headers and not reused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import httptools

from .streams import BodyError, BodyStream, WriteGate

__all__ = [
    "UpstreamPool",
    "UpstreamResponse",
    "UpstreamError",
    "ClientAborted",
    "UpstreamClosedEarly",
    "UpstreamConnectError",
    "UpstreamTimeout",
]


# Responses up to this size with a Content-Length are read whole before they are returned.
BUFFER_LIMIT = 256 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached or broke the exchange before answering."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: the upstream never saw the request, so it can go elsewhere."""


class UpstreamClosedEarly(UpstreamError):
    """A new connection was closed before any response byte: the upstream is going away.

    The request may or may not have reached its handler; ``replayable`` says whether the
    whole body is still at hand to send it elsewhere (the caller decides if it may).
    """

    def __init__(self, message: str, *, replayable: bool) -> None:
        super().__init__(message)
        self.replayable = replayable


class ClientAborted(UpstreamError):
    """The caller's own request body was cut short (its client went away) while it was
    being sent on: nobody is left to answer, and the upstream connection is closed."""


class UpstreamTimeout(UpstreamError):
    """No response headers within the timeout."""


class _Stale(UpstreamError):
    """A reused connection was found closed before any response byte arrived."""


def _discard_outcome(future: asyncio.Future[UpstreamResponse]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: asyncio would log an unread exception otherwise


def _expire(waiter: asyncio.Future[UpstreamResponse], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"no response within {timeout:g} s"))


class UpstreamResponse:
    """Status, headers (lower-case names) and a body stream; ``length`` when Content-Length was given."""

    __slots__ = ("status", "headers", "body", "length", "_conn")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: BodyStream) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.length: int | None = None
        self._conn: _UpstreamConnection | None = None

    def release(self, ok: bool = True) -> None:
        """Hand the connection back to the pool (or close it when the exchange failed)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release(ok)


class _UpstreamConnection(asyncio.Protocol):
    def __init__(
        self, pool: UpstreamPool, key: tuple[str, int], loop: asyncio.AbstractEventLoop
    ) -> None:
        # Kept, not looked up per call: asyncio.get_running_loop() costs a getpid()
        # system call on CPython 3.11.
        self.loop = loop
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.response: UpstreamResponse | None = None
        self.waiter: asyncio.Future[UpstreamResponse] | None = None
        self.got_bytes = False
        self.message_done = False
        self.head_request = False
        self.closed = False
        self.idle_since = 0.0
        self.reusable = False
        self.write_gate = WriteGate(loop)

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.got_bytes:
                self.waiter.set_exception(
                    UpstreamError("upstream closed the connection mid-response")
                )
            else:
                self.waiter.set_exception(_Stale("upstream closed the connection"))
        if self.response is not None and not self.message_done:
            # A close-delimited body (no length, not chunked) ends with the connection;
            # any other is cut short (llhttp would take the EOF as its end).
            if self.response.length is None and not _chunked(self.response.headers):
                try:
                    self.parser.feed_data(b"")
                except httptools.HttpParserError:
                    pass
            if not self.message_done:
                self.response.body.abort(ConnectionError("upstream closed mid-body"))
        self.write_gate.fail(ConnectionError("upstream closed the connection"))
        self.pool._forget(self)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            err = UpstreamError(f"malformed response from upstream: {exc}")
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(err)
            elif self.response is not None:
                self.response.body.abort(err)
            self._close()

    def pause_writing(self) -> None:
        self.write_gate.pause()

    def resume_writing(self) -> None:
        self.write_gate.resume()

    # -- httptools callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            # An interim response (we never send Expect, so this is rare): skip it.
            self.headers = []
            return
        body = BodyStream(self._pause_reading, self._resume_reading)
        response = UpstreamResponse(status, self.headers, body)
        for name, value in self.headers:
            if name == b"content-length":
                try:
                    response.length = int(value)
                except ValueError:
                    pass
                break
        response._conn = self
        self.reusable = self.parser.should_keep_alive()
        self.response = response
        if self.head_request:
            # No body follows a HEAD response; llhttp would wait for Content-Length bytes.
            self.reusable = False
            self.message_done = True
            body.finish()
        elif response.length is not None and response.length <= BUFFER_LIMIT:
            # Hand small responses over whole (as nginx's proxy_buffering does): waitress
            # sends headers and body in separate segments, and answering at the headers
            # would cost the client side a second write and loop wake-up per call.
            return
        self._deliver()

    def _deliver(self) -> None:
        if self.waiter is not None and not self.waiter.done() and self.response is not None:
            self.waiter.set_result(self.response)

    def on_body(self, chunk: bytes) -> None:
        if self.response is not None:
            self.response.body.feed(chunk)

    def on_message_complete(self) -> None:
        if self.response is None:
            return  # end of an interim 1xx response
        self.message_done = True
        self.response.body.finish()
        self._deliver()

    # -- flow control --------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    async def drain(self) -> None:
        if not self.closed:
            await self.write_gate.wait()

    # -- lifecycle --------------------------------------------------------------------------------
    def begin(self, head_request: bool) -> asyncio.Future[UpstreamResponse]:
        self.headers = []
        self.response = None
        self.got_bytes = False
        self.message_done = False
        self.head_request = head_request
        self.waiter = self.loop.create_future()
        return self.waiter

    def release(self, ok: bool) -> None:
        self.waiter = None
        if ok and self.reusable and self.message_done and not self.closed:
            self.response = None
            self.pool._put_idle(self)
        else:
            self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n == b"transfer-encoding" and b"chunked" in v.lower() for n, v in headers)


_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"expect",
        b"content-length",
        b"host",
    }
)


def forwardable(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers minus hop-by-hop ones (and any the Connection header names).

    ``content-length``, ``host`` and ``expect`` are dropped too: the proxy writes its own.
    """
    listed: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            listed.update(v.strip().lower() for v in value.split(b","))
    if listed:
        return [(n, v) for n, v in headers if n not in _HOP_BY_HOP and n not in listed]
    return [(n, v) for n, v in headers if n not in _HOP_BY_HOP]


class UpstreamPool:
    """Keep-alive connections to upstreams, reused LIFO, capped and expired."""

    def __init__(
        self,
        *,
        max_idle_per_upstream: int = 64,
        idle_timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.max_idle = max_idle_per_upstream
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._idle: dict[tuple[str, int], list[_UpstreamConnection]] = {}
        self._all: set[_UpstreamConnection] = set()
        self._reaper: asyncio.TimerHandle | None = None

    async def request(
        self,
        host: str,
        port: int,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: BodyStream | bytes,
        *,
        timeout: float,
    ) -> UpstreamResponse:
        """Send one request and wait for the response headers.

        ``headers`` must already be free of hop-by-hop headers (see :func:`forwardable`).
        The caller reads ``response.body`` and then calls ``response.release()``.
        Raises :class:`UpstreamTimeout` or :class:`UpstreamError`.
        """
        key = (host, port)
        if isinstance(body, bytes):
            body = BodyStream.of(body)
        replayable = body.fully_buffered
        for attempt in (0, 1):
            conn = self._take_idle(key)
            fresh = conn is None
            if conn is None:
                conn = await self._connect(key)
            try:
                return await self._exchange(
                    conn, method, target, headers, body, replayable, timeout
                )
            except _Stale:
                conn._close()
                # Only a reused connection may have gone stale under us; a fresh one
                # failing like this means the upstream is closing on us: give up.
                if fresh or not replayable or attempt == 1:
                    raise UpstreamClosedEarly(
                        "upstream closed the connection before answering", replayable=replayable
                    ) from None
            except BaseException:
                conn._close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(
        self,
        conn: _UpstreamConnection,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: BodyStream,
        replayable: bool,
        timeout: float,
    ) -> UpstreamResponse:
        transport = conn.transport
        assert transport is not None
        host, port = conn.key
        head = [
            b"%s %s HTTP/1.1\r\nhost: %s:%d\r\n" % (method.encode(), target, host.encode(), port)
        ]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        waiter = conn.begin(method == "HEAD")
        if replayable:
            data = body.peek_all()
            if data or method in ("POST", "PUT", "PATCH"):
                head.append(b"content-length: %d\r\n" % len(data))
            head.append(b"\r\n")
            transport.write(b"".join(head) + data)
        else:
            head.append(b"transfer-encoding: chunked\r\n\r\n")
            transport.write(b"".join(head))
            while True:
                try:
                    chunk = await body.read()
                except BodyError:
                    # The upstream's answer, if one comes, has no reader now.
                    waiter.add_done_callback(_discard_outcome)
                    raise ClientAborted("the request body was cut short by the client") from None
                if not chunk:
                    break
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await conn.drain()
                if conn.closed and waiter.done():
                    break  # the upstream answered early (e.g. 413) and closed
            if not conn.closed:
                transport.write(b"0\r\n\r\n")
        # A timer on the future, not asyncio.wait_for: wait_for wraps the await in a
        # new task, which costs more than the rest of the exchange.
        timer = conn.loop.call_later(timeout, _expire, waiter, timeout)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def _connect(self, key: tuple[str, int]) -> _UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _UpstreamConnection(self, key, loop), key[0], key[1]
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamConnectError(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {key[0]}:{key[1]}: {exc.strerror or exc}"
            ) from None
        self._all.add(conn)
        return conn

    def _take_idle(self, key: tuple[str, int]) -> _UpstreamConnection | None:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if not conn.closed:
                return conn
        return None

    def _put_idle(self, conn: _UpstreamConnection) -> None:
        stack = self._idle.setdefault(conn.key, [])
        if len(stack) >= self.max_idle:
            conn._close()
            return
        conn.idle_since = time.monotonic()
        stack.append(conn)
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().call_later(self.idle_timeout / 2, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        cutoff = time.monotonic() - self.idle_timeout
        for key, stack in list(self._idle.items()):
            keep = [c for c in stack if c.idle_since > cutoff and not c.closed]
            for conn in stack:
                if conn not in keep:
                    conn._close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._reaper = asyncio.get_running_loop().call_later(self.idle_timeout / 2, self._reap)

    def _forget(self, conn: _UpstreamConnection) -> None:
        self._all.discard(conn)

    def discard(self, host: str, port: int) -> None:
        """Close idle connections to one upstream (a replica being stopped)."""
        for conn in self._idle.pop((host, port), []):
            conn._close()

    def close(self) -> None:
        """Close every connection."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn in list(self._all):
            conn._close()
        self._idle.clear()
