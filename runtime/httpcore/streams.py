"""A body stream shared by the server (request bodies) and the upstream client (responses).

Chunks are pushed by a protocol's parser callbacks and pulled by whoever forwards them.
Back-pressure: when more than ``HIGH_WATER`` bytes wait unread, the producing
transport is paused; it resumes once the reader has drained below ``LOW_WATER``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class BodyError(Exception):
    """The peer went away before the body was complete."""


class BodyStream:
    """Chunks of one message body, readable once, in order."""

    __slots__ = (
        "_chunks",
        "_buffered",
        "complete",
        "_error",
        "_waiter",
        "_pause",
        "_resume",
        "_paused",
        "received",
        "on_first_read",
    )

    def __init__(
        self,
        pause: Callable[[], None] | None = None,
        resume: Callable[[], None] | None = None,
    ) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self.complete = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._paused = False
        self.received = 0
        # Called once before the first read: the server sends "100 Continue" here.
        self.on_first_read: Callable[[], None] | None = None

    @classmethod
    def of(cls, data: bytes) -> BodyStream:
        """A complete stream holding ``data``."""
        stream = cls()
        if data:
            stream._chunks.append(data)
            stream._buffered = stream.received = len(data)
        stream.complete = True
        return stream

    # -- producer side (protocol callbacks) -------------------------------------------
    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.received += len(chunk)
        if self._buffered > HIGH_WATER and not self._paused and self._pause is not None:
            self._paused = True
            self._pause()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def abort(self, exc: BaseException) -> None:
        if not self.complete:
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- consumer side -----------------------------------------------------------------
    @property
    def fully_buffered(self) -> bool:
        """True when every byte has arrived and nothing was read yet (so it can be replayed)."""
        return self.complete and self._buffered == self.received

    def peek_all(self) -> bytes:
        """All bytes of a :attr:`fully_buffered` stream, without consuming them."""
        if len(self._chunks) > 1:
            joined = b"".join(self._chunks)
            self._chunks.clear()
            self._chunks.append(joined)
        return self._chunks[0] if self._chunks else b""

    async def read(self) -> bytes:
        """The next chunk, or ``b""`` at the end of the body."""
        if self.on_first_read is not None:
            callback, self.on_first_read = self.on_first_read, None
            callback()
        while not self._chunks:
            if self._error is not None:
                raise BodyError(str(self._error)) from self._error
            if self.complete:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self._resume is not None:
            self._paused = False
            self._resume()
        return chunk

    async def read_all(self, limit: int) -> bytes:
        """The whole body; :class:`BodyTooLarge` past ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while True:
            chunk = await self.read()
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            parts.append(chunk)


class BodyTooLarge(Exception):
    """A body exceeded the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class WriteGate:
    """Write back-pressure of one transport: a protocol's ``pause_writing``/``resume_writing``
    close and open it, and a writer awaits :meth:`wait` after each chunk."""

    __slots__ = ("paused", "_waiter", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, exc: BaseException) -> None:
        """The connection is gone: a writer waiting here gets ``exc``."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def wait(self) -> None:
        if self.paused:
            self._waiter = self._loop.create_future()
            await self._waiter
