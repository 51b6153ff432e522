"""The durable queue behind ``/async-function/{name}``: one SQLite file in the state directory.

A call moves ``queued -> running -> done``; an unreachable function sends it back to
``queued`` with a later ``next_attempt_at`` (:meth:`CallStore.retry_later`) until the
worker gives up and parks it as ``failed`` (:meth:`CallStore.fail`), where the CLI
can see it and :meth:`CallStore.retry_failed` can queue it again. Every transition is
committed before the method returns, so a gateway killed with SIGKILL loses nothing:
on restart :meth:`CallStore.requeue_interrupted` puts the calls that were running back
in the queue and they run again (delivery is at-least-once, as with NATS upstream).

Example::

    store = CallStore(state_dir / "queue.sqlite3")
    store.requeue_interrupted()                      # once, before the workers start
    store.enqueue(NewCall(call_id, "hello", "POST", "", "", headers, body, None))
    call = store.claim(time.time())                  # worker: oldest due call, now running
    store.complete(call.call_id, 200, 0.012)

One gateway process owns a state directory; the CLI may read the same file
concurrently (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "STATUSES",
    "NewCall",
    "QueuedCall",
    "CallSummary",
    "CallStateError",
    "DuplicateCallError",
    "CallStore",
]

STATUSES = ("queued", "running", "done", "failed")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order, the FIFO key
    call_id         TEXT    NOT NULL UNIQUE,
    function        TEXT    NOT NULL,
    method          TEXT    NOT NULL,
    path            TEXT    NOT NULL,
    query           TEXT    NOT NULL,
    headers         TEXT    NOT NULL,                   -- JSON [[name, value], ...]
    body            BLOB    NOT NULL,
    callback_url    TEXT,
    status          TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    enqueued_at     REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    next_attempt_at REAL    NOT NULL,
    last_error      TEXT    NOT NULL DEFAULT '',
    result_status   INTEGER,
    duration        REAL
);
-- claim(): walk queued calls in enqueue order, testing next_attempt_at from the index
-- alone; also serves list(status=...) and counts() without touching the table.
CREATE INDEX IF NOT EXISTS calls_by_status ON calls (status, seq, next_attempt_at);
-- next_due(): the earliest retry time is the first entry.
CREATE INDEX IF NOT EXISTS calls_by_due ON calls (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS calls_by_function ON calls (function, seq);
"""

_FULL_COLUMNS = (
    "call_id, function, method, path, query, headers, body, callback_url, status, attempts,"
    " enqueued_at, updated_at, next_attempt_at, last_error, result_status, duration"
)
# The listing leaves out headers and body: bodies can be megabytes and a CLI listing
# of a hundred calls should not read them. length() of a BLOB does not load it.
_SUMMARY_COLUMNS = (
    "call_id, function, method, path, status, attempts, enqueued_at, updated_at,"
    " next_attempt_at, last_error, result_status, duration, length(body)"
)


@dataclass(frozen=True)
class NewCall:
    """An accepted ``/async-function/{name}`` request, as the gateway hands it to the queue."""

    call_id: str  # the X-Call-Id the 202 response carried
    function: str  # "name" or "name.namespace", as in the URL
    method: str
    path: str  # the part after /async-function/<name>, "" or "/..."
    query: str  # raw query string without "?"
    headers: list[tuple[str, str]]  # in arrival order; repeated names allowed
    body: bytes
    callback_url: str | None  # X-Callback-Url, already validated as a URL


@dataclass(frozen=True)
class QueuedCall:
    """A stored call and where it is in its life."""

    call_id: str
    function: str
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    callback_url: str | None
    status: str  # one of STATUSES
    attempts: int  # claims so far, including one interrupted by a crash
    enqueued_at: float  # epoch seconds
    updated_at: float  # epoch seconds of the last transition
    next_attempt_at: float  # epoch seconds; claimable once now >= this
    last_error: str  # why the last attempt failed; "" if none did
    result_status: int | None  # the function's HTTP status once done
    duration: float | None  # seconds the successful attempt took


@dataclass(frozen=True)
class CallSummary:
    """A call as :meth:`CallStore.list` shows it: everything but headers and body."""

    call_id: str
    function: str
    method: str
    path: str
    status: str
    attempts: int
    enqueued_at: float
    updated_at: float
    next_attempt_at: float
    last_error: str
    result_status: int | None
    duration: float | None
    body_size: int


class DuplicateCallError(ValueError):
    """:meth:`CallStore.enqueue` was given a call id that is already stored."""


class CallStateError(LookupError):
    """A transition named a call that does not exist or is not in the state it needs."""


def _check_status(status: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is invalid: expected one of {', '.join(STATUSES)}")
    return status


def _check_non_negative(what: str, value: float) -> float:
    # "not value >= 0" also rejects NaN, which would make a call never due.
    if not value >= 0:
        raise ValueError(f"{what}={value!r}: expected seconds >= 0")
    return value


def _to_call(row: tuple[Any, ...]) -> QueuedCall:
    (call_id, function, method, path, query, headers, body, callback_url, status,
     attempts, enqueued_at, updated_at, next_attempt_at, last_error, result_status,
     duration) = row  # fmt: skip
    return QueuedCall(
        call_id=call_id,
        function=function,
        method=method,
        path=path,
        query=query,
        headers=[(name, value) for name, value in json.loads(headers)],
        body=bytes(body),
        callback_url=callback_url,
        status=status,
        attempts=attempts,
        enqueued_at=enqueued_at,
        updated_at=updated_at,
        next_attempt_at=next_attempt_at,
        last_error=last_error,
        result_status=result_status,
        duration=duration,
    )


class CallStore:
    """Queued async calls in one SQLite file; safe to call from several threads.

    One connection serves every caller (the asyncio loop and ``asyncio.to_thread``
    workers), serialised by a lock; each method is one short autocommit statement.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        """Open (creating if needed) the queue at ``path``; ``clock`` gives epoch seconds."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, so every statement is its own committed
        # transaction and no method can leave one open behind it.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    def _setup(self) -> None:
        # WAL + synchronous=NORMAL: a commit is in the WAL file (the OS page cache) when
        # the statement returns, so a process kill, SIGKILL included, loses nothing;
        # only an OS crash or power cut may roll back the last commits before the next
        # checkpoint fsync. FULL would fsync on every commit (three per call) for
        # protection against a failure the requirement does not ask us to survive.
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"cannot use WAL journal on this filesystem ({mode})")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The CLI may hold the write lock briefly (retry_failed); wait rather than fail.
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise sqlite3.DatabaseError(
                f"queue schema version {version} is not supported (expected {SCHEMA_VERSION})"
            )
        self._db.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def _transition(self, call_id: str, sql: str, params: tuple[Any, ...]) -> None:
        if self._write(sql, params) == 0:
            raise CallStateError(f"call {call_id!r} is unknown or not running")

    def _insert(self, call: NewCall, headers: str, now: float) -> None:
        self._db.execute(
            "INSERT INTO calls (call_id, function, method, path, query, headers, body,"
            " callback_url, status, attempts, enqueued_at, updated_at, next_attempt_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?)",
            (call.call_id, call.function, call.method, call.path, call.query, headers,
             call.body, call.callback_url, now, now, now),
        )  # fmt: skip

    def enqueue(self, call: NewCall) -> QueuedCall:
        """Store ``call`` as queued and due now; committed before this returns.

        Raises :class:`DuplicateCallError` (a ValueError) if ``call_id`` is already stored.
        """
        now = self._clock()
        headers = json.dumps([[name, value] for name, value in call.headers])
        with self._lock:
            try:
                self._insert(call, headers, now)
            except sqlite3.IntegrityError as exc:
                # The only constraint a well-formed NewCall can break is the unique id.
                raise DuplicateCallError(f"call id {call.call_id!r} is already in use") from exc
        return QueuedCall(
            call_id=call.call_id,
            function=call.function,
            method=call.method,
            path=call.path,
            query=call.query,
            headers=list(call.headers),
            body=call.body,
            callback_url=call.callback_url,
            status="queued",
            attempts=0,
            enqueued_at=now,
            updated_at=now,
            next_attempt_at=now,
            last_error="",
            result_status=None,
            duration=None,
        )

    def claim(self, now: float) -> QueuedCall | None:
        """Take the oldest-enqueued queued call due at ``now``: it becomes running, attempts+1.

        One UPDATE does the pick and the change, so two claimers, even on separate
        connections, never get the same call. Returns None when nothing is due.
        """
        with self._lock:
            # fetchall steps the statement to completion, which is what commits it.
            rows = self._db.execute(
                "UPDATE calls SET status = 'running', attempts = attempts + 1, updated_at = ?"
                " WHERE seq = (SELECT seq FROM calls WHERE status = 'queued'"
                "              AND next_attempt_at <= ? ORDER BY seq LIMIT 1)"
                f" RETURNING {_FULL_COLUMNS}",
                (self._clock(), now),
            ).fetchall()
        return _to_call(rows[0]) if rows else None

    def next_due(self) -> float | None:
        """The earliest ``next_attempt_at`` among queued calls, or None if none is queued."""
        with self._lock:
            row = self._db.execute(
                "SELECT min(next_attempt_at) FROM calls WHERE status = 'queued'"
            ).fetchone()
        return row[0] if row else None

    def complete(self, call_id: str, result_status: int, duration: float) -> None:
        """Mark a running call done with the function's status and how long it took."""
        self._transition(
            call_id,
            "UPDATE calls SET status = 'done', result_status = ?, duration = ?, updated_at = ?"
            " WHERE call_id = ? AND status = 'running'",
            (result_status, duration, self._clock(), call_id),
        )

    def retry_later(self, call_id: str, error: str, delay: float) -> None:
        """Put a running call back in the queue, claimable ``delay`` seconds from now."""
        _check_non_negative("delay", delay)
        now = self._clock()
        self._transition(
            call_id,
            "UPDATE calls SET status = 'queued', last_error = ?, next_attempt_at = ?,"
            " updated_at = ? WHERE call_id = ? AND status = 'running'",
            (error, now + delay, now, call_id),
        )

    def fail(self, call_id: str, error: str) -> None:
        """Park a running call as failed; it stays until :meth:`retry_failed`."""
        self._transition(
            call_id,
            "UPDATE calls SET status = 'failed', last_error = ?, updated_at = ?"
            " WHERE call_id = ? AND status = 'running'",
            (error, self._clock(), call_id),
        )

    def requeue_interrupted(self) -> int:
        """At start-up, before any worker runs: every running call back to queued.

        ``attempts`` is kept, so a call that keeps killing the gateway still runs out of
        retries. Returns how many calls were requeued.
        """
        now = self._clock()
        return self._write(
            "UPDATE calls SET status = 'queued', next_attempt_at = ?, updated_at = ?"
            " WHERE status = 'running'",
            (now, now),
        )

    def get(self, call_id: str) -> QueuedCall | None:
        """The stored call with ``call_id``, body included, or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_FULL_COLUMNS} FROM calls WHERE call_id = ?", (call_id,)
            ).fetchone()
        return _to_call(row) if row else None

    def list(
        self, *, status: str | None = None, function: str | None = None, limit: int = 100
    ) -> list[CallSummary]:
        """Newest first, at most ``limit``, optionally only one status and/or function."""
        if limit < 1:
            raise ValueError(f"limit={limit!r}: expected at least 1")
        where: list[str] = []
        params: list[object] = []
        if status is not None:
            where.append("status = ?")
            params.append(_check_status(status))
        if function is not None:
            where.append("function = ?")
            params.append(function)
        sql = f"SELECT {_SUMMARY_COLUMNS} FROM calls"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit)).fetchall()
        return [CallSummary(*row) for row in rows]

    def counts(self) -> dict[str, int]:
        """How many calls are in each status; every status is a key, zero included."""
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM calls GROUP BY status")
            found = dict(rows.fetchall())
        return {status: found.get(status, 0) for status in STATUSES}

    def retry_failed(self, call_id: str | None = None) -> int:
        """Queue failed calls again, due now: one by id, or all when ``call_id`` is None.

        ``attempts`` restarts at zero so an operator's retry gets the whole backoff
        budget again; ``last_error`` stays until the next attempt replaces it.
        Returns how many calls were requeued (0 if ``call_id`` is not a failed call).
        """
        now = self._clock()
        sql = (
            "UPDATE calls SET status = 'queued', attempts = 0, next_attempt_at = ?,"
            " updated_at = ? WHERE status = 'failed'"
        )
        if call_id is None:
            return self._write(sql, (now, now))
        return self._write(sql + " AND call_id = ?", (now, now, call_id))

    def prune(self, *, done_older_than: float) -> int:
        """Delete calls done more than ``done_older_than`` seconds ago; returns how many."""
        _check_non_negative("done_older_than", done_older_than)
        return self._write(
            "DELETE FROM calls WHERE status = 'done' AND updated_at < ?",
            (self._clock() - done_older_than,),
        )

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> CallStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
