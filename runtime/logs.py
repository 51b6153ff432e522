"""Function logs behind ``GET /system/logs``: one JSON-lines file per function, plus followers.

Each line a replica prints becomes one record, appended to ``<root>/<name>.log`` as
``{"timestamp": "2026-11-21T09:00:00.123456Z", "ts": 1795251600.123456,
"instance": "hello-1", "text": "..."}``; the wire record adds ``name`` and
``namespace`` (contract §1.8). When a file would grow past ``max_bytes`` it becomes
``<name>.log.1`` (replacing the previous one) and a new file starts, so a function
keeps between ``max_bytes`` and ``2 * max_bytes`` of its most recent output.

Followers (``follow=true``) each get a bounded :class:`asyncio.Queue`. A follower
that falls behind by more than ``follow_buffer`` records loses the oldest ones and
is told so by a synthetic record (instance ``gateway``, text
``[N log records dropped: reader too slow]``) in the place of the gap, because
blocking :meth:`LogStore.append` would stall the function's stdout pipe, and an
unbounded queue would let one stalled HTTP client grow the gateway without limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sdk.openfaas import validate_name

__all__ = ["LogRecord", "LogStore", "DROPPED_INSTANCE", "format_timestamp"]

log = logging.getLogger(__name__)

DROPPED_INSTANCE = "gateway"


def format_timestamp(ts: float) -> str:
    """RFC 3339 UTC, microseconds: ``format_timestamp(0.5) == "1970-01-01T00:00:00.500000Z"``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LogRecord:
    """One line of a function's output."""

    name: str  # function name
    namespace: str
    instance: str  # the replica that printed it
    timestamp: str  # RFC 3339 UTC, e.g. 2026-11-21T09:00:00.123456Z
    text: str  # the line, without its newline
    ts: float  # the same instant in epoch seconds, for ``since`` filtering

    def to_json(self) -> dict[str, str]:
        """The wire object of ``/system/logs``: name, namespace, instance, timestamp, text."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "instance": self.instance,
            "timestamp": self.timestamp,
            "text": self.text,
        }


def _write_all(file: BinaryIO, data: bytes) -> None:
    # An unbuffered write may be short (e.g. just before ENOSPC); finish it or raise.
    view = memoryview(data)
    while view:
        view = view[file.write(view) or 0 :]


@dataclass
class _Writer:
    file: BinaryIO
    size: int


@dataclass(eq=False)
class _Follower:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[LogRecord]
    dropped: int = 0
    since: float | None = None

    def deliver(self, record: LogRecord) -> None:
        """Queue ``record`` on the follower's loop, dropping the oldest if it is full."""
        if self.since is not None and record.ts < self.since:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(record)


class LogStore:
    """Per-function log files under ``root`` for one namespace, with live followers.

    :meth:`append` may be called from any thread; it is meant for the event loop's
    stdout reader tasks and does one ``write(2)`` and no fsync. Records are written
    unbuffered, so they survive a gateway crash and :meth:`read` sees them at once.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int = 5_000_000,
        namespace: str = "openfaas-fn",
        max_open_files: int = 64,
        follow_buffer: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keep logs in ``root`` (created if missing).

        ``max_open_files`` bounds the append handles kept open (least recently used is
        closed first); ``follow_buffer`` is how many records a follower may lag.
        """
        for what, value in (
            ("max_bytes", max_bytes),
            ("max_open_files", max_open_files),
            ("follow_buffer", follow_buffer),
        ):
            if value < 1:
                raise ValueError(f"{what}={value!r}: expected at least 1")
        root.mkdir(parents=True, exist_ok=True)
        self._root = root
        self._max_bytes = max_bytes
        self._namespace = namespace
        self._max_open = max_open_files
        self._follow_buffer = follow_buffer
        self._clock = clock
        # One lock for files and followers: append, a follower's start (subscribe and
        # snapshot) and remove must not interleave, or a follower would see a record
        # twice or miss it.
        self._lock = threading.Lock()
        self._writers: OrderedDict[str, _Writer] = OrderedDict()
        self._followers: dict[str, set[_Follower]] = {}
        self._write_failing = False

    def _paths(self, name: str) -> tuple[Path, Path]:
        current = self._root / f"{validate_name('function name', name)}.log"
        return current.with_name(current.name + ".1"), current

    def append(self, name: str, instance: str, text: str) -> None:
        """Record one line ``text`` (a trailing newline is dropped) printed by ``instance``.

        A write error (disk full) is logged and the record still reaches followers:
        logging must never stop a function's output from being drained.
        """
        rotated, current = self._paths(name)
        ts = self._clock()
        record = LogRecord(
            name, self._namespace, instance, format_timestamp(ts), text.rstrip("\r\n"), ts
        )
        stored = {
            "timestamp": record.timestamp,
            "ts": ts,
            "instance": instance,
            "text": record.text,
        }
        # ASCII escapes: a lone surrogate from a badly decoded pipe cannot fail encode().
        line = json.dumps(stored).encode("ascii") + b"\n"
        with self._lock:
            self._write(name, rotated, current, line)
            followers = self._followers.get(name)
            if followers:
                self._notify(followers, record)

    def _write(self, name: str, rotated: Path, current: Path, line: bytes) -> None:
        try:
            writer = self._writer(name, current)
            if writer.size and writer.size + len(line) > self._max_bytes:
                writer.file.close()
                del self._writers[name]
                os.replace(current, rotated)
                writer = self._writer(name, current)
            _write_all(writer.file, line)
            writer.size += len(line)
            self._write_failing = False
        except OSError as exc:
            broken = self._writers.pop(name, None)
            if broken is not None:  # reopen next time, in case the file was the problem
                broken.file.close()
            if not self._write_failing:  # one warning per outage, not one per line
                log.warning("cannot write logs of function %s to %s: %s", name, current, exc)
            self._write_failing = True

    def _writer(self, name: str, current: Path) -> _Writer:
        writer = self._writers.get(name)
        if writer is not None:
            self._writers.move_to_end(name)
            return writer
        # Unbuffered: each record is one write(2) with O_APPEND, visible to readers
        # immediately and never half-held in a Python buffer when the process dies.
        # "+" only so the last byte can be checked below; writes still go to the end.
        file = open(current, "a+b", buffering=0)
        try:
            size = os.fstat(file.fileno()).st_size
            if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
                # A previous process died mid-line; end that line so ours stays parseable.
                _write_all(file, b"\n")
                size += 1
        except OSError:
            file.close()
            raise
        writer = self._writers[name] = _Writer(file, size)
        if len(self._writers) > self._max_open:
            self._writers.popitem(last=False)[1].file.close()
        return writer

    @staticmethod
    def _notify(followers: set[_Follower], record: LogRecord) -> None:
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for follower in followers:
            if follower.loop is here:
                follower.deliver(record)
            else:
                # asyncio.Queue is not thread-safe; hand the record to its own loop.
                try:
                    follower.loop.call_soon_threadsafe(follower.deliver, record)
                except RuntimeError:
                    pass  # that loop is closed: its follower can never read again

    def _open_snapshot(self, name: str) -> list[tuple[BinaryIO, int]]:
        """Open both files and note their sizes now; call with the lock held.

        The open handles keep reading the same data even if the files rotate later.
        """
        snapshot: list[tuple[BinaryIO, int]] = []
        try:
            for path in self._paths(name):
                try:
                    file = open(path, "rb")  # _read_snapshot closes it
                except FileNotFoundError:
                    continue
                snapshot.append((file, os.fstat(file.fileno()).st_size))
        except BaseException:
            for opened, _ in snapshot:
                opened.close()
            raise
        return snapshot

    def _read_snapshot(
        self,
        name: str,
        snapshot: list[tuple[BinaryIO, int]],
        tail: int | None,
        since: float | None,
    ) -> list[LogRecord]:
        lines: list[bytes] = []
        try:
            for file, size in snapshot:
                lines.extend(file.read(size).splitlines())
        finally:
            for file, _ in snapshot:
                file.close()
        limit = tail if tail is not None and tail > 0 else None
        if limit is not None and since is None:
            lines = lines[-limit:]  # only decode what will be returned
        records = []
        for line in lines:
            record = self._decode(name, line)
            if record is not None and (since is None or record.ts >= since):
                records.append(record)
        return records[-limit:] if limit is not None else records

    def _decode(self, name: str, line: bytes) -> LogRecord | None:
        try:
            raw = json.loads(line)
            return LogRecord(
                name, self._namespace, str(raw["instance"]), str(raw["timestamp"]),
                str(raw["text"]), float(raw["ts"]),
            )  # fmt: skip
        except (ValueError, KeyError, TypeError):
            # Only a line cut short by a crash or a full disk gets here; skip it
            # rather than fail the whole read.
            log.warning("skipping unreadable log line of function %s: %.80r", name, line)
            return None

    def read(
        self, name: str, *, tail: int | None = None, since: float | None = None
    ) -> list[LogRecord]:
        """Stored records of ``name``, oldest first, from the rotated and current file.

        ``tail`` > 0 keeps only the last ``tail`` records (None or <= 0: all); ``since``
        keeps records with ``ts >= since``. A function with no logs gives ``[]``.
        """
        with self._lock:
            snapshot = self._open_snapshot(name)
        return self._read_snapshot(name, snapshot, tail, since)

    async def follow(
        self, name: str, *, tail: int | None, since: float | None
    ) -> AsyncGenerator[LogRecord, None]:
        """Yield what :meth:`read` would, then each new record as it is appended, forever.

        Stop by breaking out, ``aclose()`` or cancelling; the follower is unregistered
        then (after ``break`` without ``aclose``, once the generator is collected).
        """
        validate_name("function name", name)  # before subscribing, so a bad name leaks nothing
        follower = _Follower(
            asyncio.get_running_loop(), asyncio.Queue(self._follow_buffer), since=since
        )
        try:
            # Subscribe and snapshot under one lock: records before the snapshot come
            # from the files, records after it from the queue, none from both.
            with self._lock:
                self._followers.setdefault(name, set()).add(follower)
                snapshot = self._open_snapshot(name)
            # Up to 2 * max_bytes to read and decode: keep it off the event loop.
            for record in await asyncio.to_thread(self._read_snapshot, name, snapshot, tail, since):
                yield record
            while True:
                record = await follower.queue.get()
                if follower.dropped:
                    dropped, follower.dropped = follower.dropped, 0
                    yield LogRecord(
                        name, self._namespace, DROPPED_INSTANCE, record.timestamp,
                        f"[{dropped} log records dropped: reader too slow]", record.ts,
                    )  # fmt: skip
                yield record
        finally:
            with self._lock:
                followers = self._followers.get(name, set())
                followers.discard(follower)
                if not followers:
                    self._followers.pop(name, None)

    def followers(self, name: str) -> int:
        """How many followers ``name`` has now (for tests and metrics)."""
        with self._lock:
            return len(self._followers.get(name, ()))

    def remove(self, name: str) -> None:
        """Delete ``name``'s logs, e.g. when the function is removed; followers stay."""
        rotated, current = self._paths(name)
        with self._lock:
            writer = self._writers.pop(name, None)
            if writer is not None:
                writer.file.close()
            rotated.unlink(missing_ok=True)
            current.unlink(missing_ok=True)

    def close(self) -> None:
        """Close every open log file; a later :meth:`append` reopens as needed."""
        with self._lock:
            while self._writers:
                self._writers.popitem()[1].file.close()
