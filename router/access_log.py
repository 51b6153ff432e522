"""The access log: one line per request, buffered in memory and written in batches.

A line (fields separated by one space)::

    2026-11-21T11:24:55.123Z 127.0.0.1 alice.localhost GET /hello 200 13 0.84

time (UTC, ms), client address, Host (``-`` when absent), method, path without the
query (a query may carry tokens), status, body bytes sent, duration in ms (until the
last byte was handed to the kernel).

Lines are appended to a buffer and written with one ``write`` when the buffer passes
64 KiB, or at the latest one second after the first unwritten line, and at close: at
high request rates that is one system call per few hundred requests instead of one
per line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

__all__ = ["AccessLog"]

log = logging.getLogger(__name__)

FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 1.0
MAX_PATH = 1024  # longer paths are cut: a log line should stay a line


class AccessLog:
    """Writes access log lines to ``destination``: ``-`` (standard output), ``off``, or a file."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.enabled = destination.lower() != "off"
        self._fd: int | None = None
        self._own_fd = False
        self._lines: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = b""

    def open(self) -> None:
        """Open the destination (a file is created if missing and appended to)."""
        if not self.enabled:
            return
        if self.destination == "-":
            self._fd = 1
        else:
            self._fd = os.open(self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._own_fd = True

    def record(
        self,
        client: str,
        host: bytes | None,
        method: str,
        target: bytes,
        status: int,
        sent: int,
        seconds: float,
    ) -> None:
        """Buffer the line of one finished request."""
        if self._fd is None:
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        path = target.partition(b"?")[0]
        if len(path) > MAX_PATH:
            path = path[:MAX_PATH] + b"..."
        if host is None:
            host = b"-"
        elif b" " in host:
            host = host.replace(b" ", b"%20")
        line = b"%s.%03dZ %s %s %s %s %d %d %.2f\n" % (
            self._stamp,
            int((now - second) * 1000),
            client.encode(),
            host,
            method.encode(),
            path,
            status,
            sent,
            seconds * 1000.0,
        )
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write every buffered line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines or self._fd is None:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            # A full disk or a closed pipe must not stop the router serving.
            log.warning("access log %s: cannot write: %s", self.destination, exc.strerror or exc)

    def close(self) -> None:
        """Flush and close the destination."""
        self.flush()
        if self._own_fd and self._fd is not None:
            os.close(self._fd)
        self._fd = None
