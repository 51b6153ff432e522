"""An asyncio client for the Docker Engine API over its unix socket.

Only what the container launcher needs: images (inspect, pull), containers (create,
start, wait, logs, stop, kill, remove, list, inspect) and ``/version``. One connection
per call (``Connection: close``): a unix-socket connect costs microseconds, and the
long-lived calls (``wait``, ``logs?follow``, a pull) need their own connection anyway.
Responses are parsed by httptools (llhttp), which also undoes chunked encoding.

The API version is negotiated once (:meth:`EngineClient.negotiate`): the engine's own,
capped at :data:`MAX_API_VERSION`, the newest whose fields this module uses.

Why not the ``docker`` CLI: one process per call costs ~50 ms of CPU, and a rollout
makes several calls per replica. Why not the ``docker`` SDK: it is synchronous
(requests) and would need a thread per followed stream.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httptools

__all__ = [
    "EngineClient",
    "EngineError",
    "FrameDecoder",
    "JsonStreamDecoder",
    "LineSplitter",
    "MAX_API_VERSION",
    "MIN_API_VERSION",
]

MAX_API_VERSION = "1.41"  # Docker 20.10
# Wait conditions (1.30); Init, NanoCpus and Mounts are older.
MIN_API_VERSION = "1.30"
READ_SIZE = 64 * 1024


class EngineError(Exception):
    """The engine refused a call or could not be reached (``status`` 0).

    The message is the engine's own (``No such image: ...``) or says what failed.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


# -- stream decoding ---------------------------------------------------------------------------------
class FrameDecoder:
    """Docker's multiplexed stdout/stderr stream (``logs`` and ``attach`` without a TTY).

    Each frame is an 8-byte header ``[stream, 0, 0, 0, size (uint32, big-endian)]``
    then ``size`` bytes of payload; stream 1 is stdout, 2 stderr. Frames may be split
    across reads, or several may come in one: :meth:`feed` keeps what is incomplete.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The complete frames so far, as ``(stream, payload)``."""
        buffer = self._buffer
        buffer += data
        frames = []
        while len(buffer) >= 8:
            size = int.from_bytes(buffer[4:8], "big")
            if len(buffer) < 8 + size:
                break
            frames.append((buffer[0], bytes(buffer[8 : 8 + size])))
            del buffer[: 8 + size]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)


class LineSplitter:
    """Bytes into lines (without ``\\n``); a line longer than ``limit`` is cut at it."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[str]:
        buffer = self._buffer
        buffer += data
        lines = []
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) < self._limit:
                    return lines
                end = self._limit
                line = bytes(buffer[:end])
                del buffer[:end]
            else:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
            lines.append(line.decode("utf-8", "replace").rstrip("\r"))

    def flush(self) -> list[str]:
        """What is left after the last newline, as a final line (if any)."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [rest.decode("utf-8", "replace")] if rest else []


class JsonStreamDecoder:
    """Concatenated JSON objects, as ``/images/create`` streams its progress."""

    def __init__(self) -> None:
        self._text = ""
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[Any]:
        # Messages are whole lines of ASCII JSON in practice; decode leniently anyway.
        self._text += data.decode("utf-8", "replace")
        out = []
        pos = 0
        text = self._text
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                break
            try:
                value, pos = self._decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break  # incomplete: wait for more
            out.append(value)
        self._text = text[pos:]
        return out


# -- HTTP ----------------------------------------------------------------------------------------------
class _ResponseParser:
    """httptools callbacks collecting status, headers and body chunks."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.chunks: list[bytes] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class Response:
    """A response whose body is read as it arrives (:meth:`chunks`) or whole (:meth:`read`)."""

    def __init__(self, reader: asyncio.StreamReader, parsed: _ResponseParser) -> None:
        self._reader = reader
        self._parsed = parsed
        self.status = parsed.status
        self.headers = parsed.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes in the pieces they arrive in (chunked encoding already undone)."""
        parsed = self._parsed
        while True:
            if parsed.chunks:
                pending, parsed.chunks = parsed.chunks, []
                for chunk in pending:
                    yield chunk
            if parsed.complete:
                return
            data = await self._reader.read(READ_SIZE)
            if not data:
                framed = "content-length" in self.headers or "chunked" in self.headers.get(
                    "transfer-encoding", ""
                )
                if framed:
                    raise EngineError(0, "the engine closed the connection mid-response")
                return  # a body delimited by the connection's end
            try:
                parsed.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                raise EngineError(0, f"malformed response from the engine: {exc}") from None

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def json(self) -> Any:
        body = await self.read()
        return json.loads(body) if body else None


def _error_message(status: int, body: bytes) -> str:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or body.decode("utf-8", "replace").strip() or f"HTTP {status}")


class EngineClient:
    """Calls to one engine at ``socket_path``; see the module docstring."""

    def __init__(self, socket_path: str, *, timeout: float = 60.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.api_version = ""  # set by negotiate()

    # -- transport -----------------------------------------------------------------------------------
    def _url(self, path: str, query: Mapping[str, str | int | bool] | None) -> str:
        prefix = f"/v{self.api_version}" if self.api_version else ""
        url = prefix + path
        if query:
            pairs = {k: (int(v) if isinstance(v, bool) else v) for k, v in query.items()}
            url += "?" + urllib.parse.urlencode(pairs)
        return url

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> AsyncIterator[Response]:
        """Send a request and yield the response once its headers are in.

        A status outside ``ok`` raises :class:`EngineError` with the engine's message.
        The connection is closed when the block ends (or is cancelled).
        """
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=READ_SIZE)
        except OSError as exc:
            raise EngineError(
                0, f"cannot reach the Docker engine at {self.socket_path}: {exc.strerror or exc}"
            ) from None
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            head = [
                f"{method} {self._url(path, query)} HTTP/1.1",
                "Host: docker",
                "User-Agent: ofc-runtime",
                "Connection: close",
            ]
            if body is not None:
                head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
            elif method in ("POST", "PUT"):
                head.append("Content-Length: 0")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
            parsed = _ResponseParser()
            while not parsed.headers_done:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise EngineError(0, "the engine closed the connection without answering")
                try:
                    parsed.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    raise EngineError(0, f"malformed response from the engine: {exc}") from None
            response = Response(reader, parsed)
            if response.status not in ok:
                raise EngineError(
                    response.status, _error_message(response.status, await response.read())
                )
            yield response
        except OSError as exc:
            raise EngineError(0, f"the Docker engine connection failed: {exc}") from None
        finally:
            writer.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int | bool] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        """One whole exchange within ``timeout`` (default: the client's): ``(status, decoded JSON)``."""
        try:
            async with asyncio.timeout(timeout or self.timeout):
                async with self.stream(method, path, query=query, body=body, ok=ok) as response:
                    return response.status, await response.json()
        except TimeoutError:
            raise EngineError(0, f"the engine did not answer {method} {path} in time") from None
        except ValueError as exc:  # JSON
            raise EngineError(0, f"unreadable answer to {method} {path}: {exc}") from None

    # -- system --------------------------------------------------------------------------------------
    async def negotiate(self) -> str:
        """Settle the API version (the engine's, capped at :data:`MAX_API_VERSION`)."""
        self.api_version = ""
        _, version = await self.call("GET", "/version")
        engine = str(version.get("ApiVersion", ""))
        try:
            too_old = _version_tuple(engine) < _version_tuple(MIN_API_VERSION)
        except ValueError:
            raise EngineError(0, f"the engine reports API version {engine!r}") from None
        if too_old:
            raise EngineError(
                0, f"the engine speaks API {engine}; at least {MIN_API_VERSION} is needed"
            )
        self.api_version = min(engine, MAX_API_VERSION, key=_version_tuple)
        return self.api_version

    async def info(self) -> dict[str, Any]:
        return (await self.call("GET", "/info"))[1]

    # -- images --------------------------------------------------------------------------------------
    async def inspect_image(self, ref: str) -> dict[str, Any] | None:
        """The image's inspect record, or ``None`` when it is not present locally."""
        status, body = await self.call("GET", f"/images/{ref}/json", ok=(200, 404))
        return body if status == 200 else None

    async def pull_image(
        self, name: str, tag: str, on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        """Pull ``name:tag`` (``tag`` may be a digest), each progress message to ``on_event``.

        A pull that fails after it started is reported in the stream with status 200;
        both kinds of failure raise :class:`EngineError` with the registry's message.
        """
        decoder = JsonStreamDecoder()
        query = {"fromImage": name, "tag": tag}
        async with self.stream("POST", "/images/create", query=query) as response:
            async for chunk in response.chunks():
                for event in decoder.feed(chunk):
                    if not isinstance(event, dict):
                        continue
                    if event.get("error") or event.get("errorDetail"):
                        detail = event.get("errorDetail") or {}
                        raise EngineError(500, str(event.get("error") or detail.get("message")))
                    on_event(event)

    # -- containers ----------------------------------------------------------------------------------
    async def create_container(self, name: str, body: dict[str, Any]) -> str:
        _, created = await self.call("POST", "/containers/create", query={"name": name}, body=body)
        return str(created["Id"])

    async def start_container(self, container_id: str) -> None:
        await self.call("POST", f"/containers/{container_id}/start", ok=(204, 304))

    async def wait_container(self, container_id: str) -> int:
        """Block until the container is not running; its exit status (no time limit)."""
        path = f"/containers/{container_id}/wait"
        async with self.stream("POST", path, query={"condition": "not-running"}) as response:
            body = await response.json()
        return int(body.get("StatusCode", -1))

    async def container_output(self, container_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The container's stdout and stderr from its start, followed until it stops."""
        decoder = FrameDecoder()
        query = {"follow": True, "stdout": True, "stderr": True}
        async with self.stream("GET", f"/containers/{container_id}/logs", query=query) as response:
            async for chunk in response.chunks():
                for frame in decoder.feed(chunk):
                    yield frame

    async def stop_container(self, container_id: str, grace: float) -> None:
        """SIGTERM (the image's stop signal), SIGKILL after ``grace`` seconds; returns once stopped."""
        seconds = max(0, int(grace + 0.999))
        await self.call(
            "POST",
            f"/containers/{container_id}/stop",
            query={"t": seconds},
            ok=(204, 304, 404),
            timeout=seconds + self.timeout,
        )

    async def kill_container(self, container_id: str) -> None:
        # 409: it is not running (any more), which is what was asked for.
        await self.call("POST", f"/containers/{container_id}/kill", ok=(204, 404, 409))

    async def remove_container(self, container_id: str) -> None:
        """Remove it, killing it first if it runs; gone already is fine."""
        query = {"force": True, "v": True}
        # 409: a removal is already in progress.
        await self.call("DELETE", f"/containers/{container_id}", query=query, ok=(204, 404, 409))

    async def list_containers(self, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every container (running or not) carrying all of ``labels``."""
        filters = json.dumps({"label": [f"{k}={v}" for k, v in labels.items()]})
        _, found = await self.call(
            "GET", "/containers/json", query={"all": True, "filters": filters}
        )
        return list(found)

    async def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        status, body = await self.call("GET", f"/containers/{container_id}/json", ok=(200, 404))
        return body if status == 200 else None
