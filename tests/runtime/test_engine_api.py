"""The Docker Engine API client's stream handling, against a fake engine on a unix socket.

Only what a real engine cannot be made to show on demand: frames and JSON messages
cut at arbitrary points by chunked encoding, a pull that fails after its 200, a
connection that ends mid-body, and an engine newer or older than the client. The
container tests (test_docker_provider.py) cover the rest against the real engine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runtime.providers.engine_api import (
    EngineClient,
    EngineError,
    FrameDecoder,
    JsonStreamDecoder,
    LineSplitter,
)


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def chunked(*pieces: bytes) -> bytes:
    """A chunked body made of ``pieces`` (each its own chunk), with the final chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def head(status: str, *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()


CHUNKED_JSON = ("Content-Type: application/json", "Transfer-Encoding: chunked")


class FakeEngine:
    """A unix-socket HTTP server answering each request with scripted byte pieces.

    ``script[path]`` lists the pieces (sent with a pause between, so the client reads
    them separately); ``requests`` records every request line it received.
    """

    def __init__(self, socket_path: Path, script: dict[str, list[bytes]]) -> None:
        self.socket_path = socket_path
        self.script = script
        self.requests: list[str] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            line = request.split(b"\r\n", 1)[0].decode()
            self.requests.append(line)
            path = line.split()[1].split("?")[0]
            if path.startswith("/v1."):
                path = "/" + path.split("/", 2)[2]
            for piece in self.script[path]:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.005)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up first, as it may once it has what it needs
        finally:
            writer.close()

    def run(self, body: Callable[[EngineClient], Awaitable[object]]) -> object:
        async def main() -> object:
            self.handlers: set[asyncio.Task[None]] = set()
            server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
            async with server:
                try:
                    return await body(EngineClient(str(self.socket_path), timeout=5))
                finally:
                    await asyncio.gather(*self.handlers)

        return asyncio.run(main())


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "engine.sock"


# -- decoders ----------------------------------------------------------------------------------------
def test_frame_decoder_fed_one_byte_at_a_time_returns_each_frame_whole() -> None:
    data = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"x" * 70000)
    decoder = FrameDecoder()

    frames = [f for i in range(len(data)) for f in decoder.feed(data[i : i + 1])]

    assert frames == [(1, b"out\n"), (2, b"err\n"), (1, b"x" * 70000)]
    assert decoder.pending == 0


def test_frame_decoder_holds_back_an_incomplete_frame() -> None:
    decoder = FrameDecoder()

    assert decoder.feed(frame(1, b"whole") + frame(2, b"partial")[:10]) == [(1, b"whole")]
    assert decoder.pending == 10


@pytest.mark.parametrize(
    ("pieces", "lines", "rest"),
    [
        ([b"a\nb", b"c\n"], ["a", "bc"], []),
        ([b"crlf\r\n"], ["crlf"], []),
        ([b"abc"], [], ["abc"]),
        ([b"x" * 10], ["x" * 4, "x" * 4], ["xx"]),
        ([b"\xff\n"], ["\ufffd"], []),
    ],
    ids=["across-pieces", "crlf", "unterminated", "over-limit-cut", "invalid-utf8"],
)
def test_line_splitter_turns_bytes_into_lines(
    pieces: list[bytes], lines: list[str], rest: list[str]
) -> None:
    splitter = LineSplitter(limit=4)

    got = [line for piece in pieces for line in splitter.feed(piece)]

    assert (got, splitter.flush()) == (lines, rest)


def test_json_stream_decoder_reassembles_objects_cut_anywhere() -> None:
    data = b'{"status":"Pulling fs layer","id":"a1"}\r\n{"status":"Done"}\n{"error":"x"}'
    for cut in range(1, len(data)):
        decoder = JsonStreamDecoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == [
            {"status": "Pulling fs layer", "id": "a1"},
            {"status": "Done"},
            {"error": "x"},
        ], cut


# -- over a socket -----------------------------------------------------------------------------------
def test_container_output_reassembles_frames_split_across_chunks(socket_path: Path) -> None:
    frames = frame(1, b"hello\n") + frame(2, b"oops\n") + frame(1, b"bye\n")
    # Chunk boundaries inside a frame header and inside a payload.
    body = chunked(frames[:3], frames[3:11], frames[11:20], frames[20:])
    engine = FakeEngine(
        socket_path,
        {
            "/containers/c1/logs": [
                head("200 OK", "Content-Type: application/vnd.docker.raw-stream",
                     "Transfer-Encoding: chunked"),
                *(body[i : i + 7] for i in range(0, len(body), 7)),
            ]
        },
    )  # fmt: skip

    async def read(client: EngineClient) -> list[tuple[int, bytes]]:
        return [f async for f in client.container_output("c1")]

    assert engine.run(read) == [(1, b"hello\n"), (2, b"oops\n"), (1, b"bye\n")]
    assert engine.requests == ["GET /containers/c1/logs?follow=1&stdout=1&stderr=1 HTTP/1.1"]


def test_pull_failing_after_its_200_raises_the_registry_message_after_the_progress(
    socket_path: Path,
) -> None:
    messages = [
        {"status": "Pulling from alice/fn", "id": "v1"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "abc"},
        {"errorDetail": {"message": "unexpected EOF"}, "error": "unexpected EOF"},
    ]
    stream = b"".join(json.dumps(m).encode() + b"\r\n" for m in messages)
    engine = FakeEngine(
        socket_path,
        {"/images/create": [head("200 OK", *CHUNKED_JSON), chunked(stream[:30], stream[30:])]},
    )
    events: list[dict] = []

    async def pull(client: EngineClient) -> None:
        await client.pull_image("127.0.0.1:5000/alice/fn", "v1", events.append)

    with pytest.raises(EngineError, match="unexpected EOF"):
        engine.run(pull)
    assert events == messages[:2]
    assert engine.requests == [
        "POST /images/create?fromImage=127.0.0.1%3A5000%2Falice%2Ffn&tag=v1 HTTP/1.1"
    ]


def test_error_status_raises_with_the_engines_message_and_status(socket_path: Path) -> None:
    body = b'{"message":"No such container: c9"}'
    engine = FakeEngine(
        socket_path,
        {
            "/containers/c9/start": [
                head("404 Not Found", "Content-Type: application/json",
                     f"Content-Length: {len(body)}"),
                body,
            ]
        },
    )  # fmt: skip

    with pytest.raises(EngineError, match="No such container: c9") as caught:
        engine.run(lambda client: client.start_container("c9"))
    assert caught.value.status == 404


def test_connection_closed_mid_chunked_body_raises_instead_of_a_short_read(
    socket_path: Path,
) -> None:
    engine = FakeEngine(
        socket_path,
        {"/containers/json": [head("200 OK", *CHUNKED_JSON), b'40\r\n[{"Id": "trunc']},
    )

    with pytest.raises(EngineError, match="closed the connection mid-response"):
        engine.run(lambda client: client.list_containers({"a": "b"}))


def test_nothing_listening_raises_engine_unreachable_naming_the_socket(socket_path: Path) -> None:
    async def call() -> object:
        return await EngineClient(str(socket_path)).negotiate()

    with pytest.raises(EngineError, match=f"cannot reach the Docker engine at {socket_path}"):
        asyncio.run(call())


def version_script(api: str) -> dict[str, list[bytes]]:
    body = json.dumps({"ApiVersion": api, "Version": "99"}).encode()
    reply = [head("200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}"), body]
    ping = [head("204 No Content")]
    return {"/version": reply, "/containers/c1/kill": ping}


def test_negotiate_with_a_newer_engine_caps_the_version_and_prefixes_later_calls(
    socket_path: Path,
) -> None:
    engine = FakeEngine(socket_path, version_script("1.45"))

    async def negotiate_then_call(client: EngineClient) -> str:
        version = await client.negotiate()
        await client.kill_container("c1")
        return version

    assert engine.run(negotiate_then_call) == "1.41"
    assert engine.requests == ["GET /version HTTP/1.1", "POST /v1.41/containers/c1/kill HTTP/1.1"]


@pytest.mark.parametrize(
    ("api", "expected"), [("1.40", "1.40"), ("1.9", None)], ids=["older-ok", "too-old"]
)
def test_negotiate_uses_an_older_engines_version_down_to_the_minimum(
    socket_path: Path, api: str, expected: str | None
) -> None:
    engine = FakeEngine(socket_path, version_script(api))

    if expected is None:
        with pytest.raises(EngineError, match="at least 1.30 is needed"):
            engine.run(lambda client: client.negotiate())
    else:
        assert engine.run(lambda client: client.negotiate()) == expected
