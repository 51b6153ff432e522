"""Forward a loopback port to the in-cluster registry (the builder pod's sidecar).

With ``registry.mode: internal`` images are named ``localhost:<nodePort>/...``: nodes
pull from that address (their NodePort, plain HTTP allowed on localhost). In the
builder pod, localhost is the pod itself, so this forwards ``OFC_FORWARD_LISTEN``
(``127.0.0.1:<nodePort>``) to ``OFC_FORWARD_TARGET`` (``registry.<ns>:5000``) and
BuildKit pushes to the same name the nodes pull. ``ofc render`` ships this file in a
ConfigMap; it runs on the builder image's Python, standard library only.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys

BUFFER = 256 * 1024


def _address(name: str) -> tuple[str, int]:
    value = os.environ.get(name, "")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SystemExit(f"registry-forward: {name}={value!r}: expected host:port")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the other side went away: the connection is over either way
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                writer.close()


async def _handle(
    target: tuple[str, int], client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        upstream_r, upstream_w = await asyncio.open_connection(*target)
    except OSError as exc:
        print(f"registry-forward: cannot reach {target[0]}:{target[1]}: {exc}", flush=True)
        client_w.close()
        return
    await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
    client_w.close()
    upstream_w.close()


async def main() -> None:
    listen, target = _address("OFC_FORWARD_LISTEN"), _address("OFC_FORWARD_TARGET")
    server = await asyncio.start_server(functools.partial(_handle, target), *listen)
    print(f"registry-forward: {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
