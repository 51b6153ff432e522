"""CallStore: the durable async-call queue, including a real SIGKILL of its owner."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.queue.store import CallStateError, CallStore, DuplicateCallError, NewCall

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    """A settable epoch clock, so tests move time instead of sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_call(call_id: str, **changes: Any) -> NewCall:
    fields: dict[str, Any] = {
        "call_id": call_id,
        "function": "hello",
        "method": "POST",
        "path": "",
        "query": "",
        "headers": [("Content-Type", "text/plain")],
        "body": b"payload " + call_id.encode(),
        "callback_url": None,
    }
    return NewCall(**(fields | changes))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[CallStore]:
    with CallStore(tmp_path / "state" / "queue.sqlite3", clock=clock) as opened:
        yield opened


def claim_all(store: CallStore, now: float) -> list[str]:
    claimed = []
    while (call := store.claim(now)) is not None:
        claimed.append(call.call_id)
    return claimed


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "function": "hello.openfaas-fn",
            "path": "/sub/path",
            "query": "a=1&b=%20",
            "headers": [("X-Dup", "1"), ("X-Dup", "2"), ("X-Unicode", "héllo")],
            "body": bytes(range(256)) * 4,
            "callback_url": "http://127.0.0.1:9000/cb?x=1",
        },
        {"headers": [], "body": b""},
    ],
    ids=["plain", "every-field-set-binary-body", "empty-headers-and-body"],
)
def test_enqueue_then_get_returns_every_field_unchanged(
    store: CallStore, clock: FakeClock, changes: dict[str, Any]
) -> None:
    sent = new_call("c1", **changes)

    returned = store.enqueue(sent)
    stored = store.get("c1")

    assert stored == returned
    assert stored is not None
    for name, value in vars(sent).items():
        assert getattr(stored, name) == value, name
    assert (stored.status, stored.attempts, stored.last_error) == ("queued", 0, "")
    assert stored.enqueued_at == stored.updated_at == stored.next_attempt_at == clock.now
    assert (stored.result_status, stored.duration) == (None, None)


def test_get_unknown_call_returns_none(store: CallStore) -> None:
    assert store.get("nope") is None


def test_enqueue_with_duplicate_call_id_raises_value_error(store: CallStore) -> None:
    store.enqueue(new_call("c1", body=b"first"))

    with pytest.raises(DuplicateCallError) as raised:
        store.enqueue(new_call("c1", body=b"second"))

    assert isinstance(raised.value, ValueError)
    stored = store.get("c1")
    assert stored is not None and stored.body == b"first"


def test_claim_takes_calls_in_enqueue_order(store: CallStore, clock: FakeClock) -> None:
    ids = [f"c{i}" for i in range(20)]
    for call_id in ids:
        store.enqueue(new_call(call_id))

    assert claim_all(store, clock.now) == ids


def test_claim_marks_call_running_and_counts_the_attempt(
    store: CallStore, clock: FakeClock
) -> None:
    store.enqueue(new_call("c1"))
    clock.now += 5

    claimed = store.claim(clock.now)

    assert claimed is not None
    assert (claimed.call_id, claimed.status, claimed.attempts) == ("c1", "running", 1)
    assert claimed.updated_at == clock.now
    assert store.get("c1") == claimed


def test_claim_with_empty_queue_returns_none(store: CallStore, clock: FakeClock) -> None:
    assert store.claim(clock.now) is None


def test_claim_before_enqueue_time_returns_none(store: CallStore, clock: FakeClock) -> None:
    store.enqueue(new_call("c1"))

    assert store.claim(clock.now - 1) is None


@pytest.mark.parametrize("connections", ["shared-store", "separate-connections"])
def test_claim_from_two_threads_never_returns_the_same_call(
    tmp_path: Path, connections: str
) -> None:
    path = tmp_path / "queue.sqlite3"
    first = CallStore(path)
    second = first if connections == "shared-store" else CallStore(path)
    ids = {f"c{i}" for i in range(300)}
    for call_id in sorted(ids):
        first.enqueue(new_call(call_id))
    start = threading.Barrier(2)
    claimed: list[list[str]] = [[], []]

    def worker(store: CallStore, into: list[str]) -> None:
        start.wait()
        into.extend(claim_all(store, now=math.inf))

    threads = [
        threading.Thread(target=worker, args=(first, claimed[0])),
        threading.Thread(target=worker, args=(second, claimed[1])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    second.close()
    if second is not first:
        first.close()

    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(ids)


def test_retry_later_call_is_not_claimable_before_its_delay(
    store: CallStore, clock: FakeClock
) -> None:
    store.enqueue(new_call("c1"))
    store.claim(clock.now)

    store.retry_later("c1", "connection refused", delay=30)

    assert store.claim(clock.now + 29.9) is None


def test_retry_later_call_is_claimable_once_due_with_attempts_kept(
    store: CallStore, clock: FakeClock
) -> None:
    store.enqueue(new_call("c1"))
    store.claim(clock.now)
    store.retry_later("c1", "connection refused", delay=30)

    again = store.claim(clock.now + 30)

    assert again is not None
    assert (again.call_id, again.attempts, again.last_error) == ("c1", 2, "connection refused")


def test_retry_later_call_waiting_does_not_block_calls_behind_it(
    store: CallStore, clock: FakeClock
) -> None:
    store.enqueue(new_call("c1"))
    store.enqueue(new_call("c2"))
    store.claim(clock.now)
    store.retry_later("c1", "refused", delay=30)

    assert claim_all(store, clock.now) == ["c2"]


def test_next_due_reports_earliest_queued_attempt(store: CallStore, clock: FakeClock) -> None:
    store.enqueue(new_call("c1"))
    store.enqueue(new_call("c2"))
    store.claim(clock.now)
    store.claim(clock.now)
    store.retry_later("c1", "refused", delay=60)
    store.retry_later("c2", "refused", delay=10)

    assert store.next_due() == clock.now + 10


def test_next_due_without_queued_calls_returns_none(store: CallStore, clock: FakeClock) -> None:
    store.enqueue(new_call("c1"))
    store.claim(clock.now)

    assert store.next_due() is None


def test_complete_records_result_and_marks_done(store: CallStore, clock: FakeClock) -> None:
    store.enqueue(new_call("c1"))
    store.claim(clock.now)
    clock.now += 2

    store.complete("c1", 201, 1.5)

    done = store.get("c1")
    assert done is not None
    assert (done.status, done.result_status, done.duration) == ("done", 201, 1.5)
    assert done.updated_at == clock.now


def test_fail_parks_call_where_claim_cannot_take_it(store: CallStore, clock: FakeClock) -> None:
    store.enqueue(new_call("c1"))
    store.claim(clock.now)

    store.fail("c1", "gave up after 5 attempts: refused")

    parked = store.get("c1")
    assert parked is not None
    assert (parked.status, parked.last_error) == ("failed", "gave up after 5 attempts: refused")
    assert store.claim(math.inf) is None


@pytest.mark.parametrize(
    "transition",
    [
        lambda s: s.complete("c1", 200, 0.1),
        lambda s: s.retry_later("c1", "e", 1),
        lambda s: s.fail("c1", "e"),
        lambda s: s.complete("nope", 200, 0.1),
        lambda s: s.retry_later("nope", "e", 1),
        lambda s: s.fail("nope", "e"),
    ],
    ids=[
        "complete-queued",
        "retry-later-queued",
        "fail-queued",
        "complete-unknown",
        "retry-later-unknown",
        "fail-unknown",
    ],
)
def test_transition_of_call_not_running_raises_call_state_error(
    store: CallStore, transition: Callable[[CallStore], None]
) -> None:
    store.enqueue(new_call("c1"))  # queued, never claimed

    with pytest.raises(CallStateError):
        transition(store)
    assert store.counts()["queued"] == 1


def failed_calls(store: CallStore, clock: FakeClock, ids: list[str]) -> None:
    for call_id in ids:
        store.enqueue(new_call(call_id))
        store.claim(clock.now)
        store.fail(call_id, "refused")


def test_retry_failed_with_id_requeues_only_that_call(store: CallStore, clock: FakeClock) -> None:
    failed_calls(store, clock, ["c1", "c2"])
    clock.now += 100

    assert store.retry_failed("c2") == 1

    assert claim_all(store, clock.now) == ["c2"]
    assert store.counts()["failed"] == 1


def test_retry_failed_without_id_requeues_all_with_fresh_attempts(
    store: CallStore, clock: FakeClock
) -> None:
    failed_calls(store, clock, ["c1", "c2"])
    clock.now += 100

    assert store.retry_failed() == 2

    requeued = store.get("c1")
    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.next_attempt_at) == (
        "queued",
        0,
        clock.now,
    )
    assert claim_all(store, clock.now) == ["c1", "c2"]


def test_retry_failed_with_call_not_failed_returns_zero(store: CallStore) -> None:
    store.enqueue(new_call("c1"))

    assert store.retry_failed("c1") == 0
    assert store.retry_failed("nope") == 0


def test_requeue_interrupted_returns_running_calls_to_queue_keeping_attempts(
    store: CallStore, clock: FakeClock
) -> None:
    for call_id in ["c1", "c2", "c3"]:
        store.enqueue(new_call(call_id))
    store.claim(clock.now)
    store.claim(clock.now)
    store.complete("c2", 200, 0.1)

    assert store.requeue_interrupted() == 1

    assert store.counts() == {"queued": 2, "running": 0, "done": 1, "failed": 0}
    back = store.claim(clock.now)
    assert back is not None
    assert (back.call_id, back.attempts) == ("c1", 2)


_KILLED_OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from runtime.queue.store import CallStore, NewCall

    store = CallStore(Path(sys.argv[1]))
    for i in range(50):
        store.enqueue(NewCall(f"c{i:02d}", "hello", "POST", "/p", "q=1",
                              [("X-N", str(i))], bytes([i]) * 1000, None))
    for _ in range(10):
        store.claim(time.time())
    for i in range(5):
        store.complete(f"c{i:02d}", 200, 0.01)
    print("ready", flush=True)
    time.sleep(120)
    """
)


def test_calls_survive_sigkill_of_owner_and_run_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    owner = subprocess.Popen(
        [sys.executable, "-c", _KILLED_OWNER, str(path)],
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line == "ready\n", owner.stderr.read() if owner.stderr else line
        os.kill(owner.pid, signal.SIGKILL)
    finally:
        owner.kill()
        owner.wait(timeout=10)
        owner.communicate()
    assert owner.returncode == -signal.SIGKILL

    with CallStore(path) as reopened:
        assert reopened.counts() == {"queued": 40, "running": 5, "done": 5, "failed": 0}
        assert reopened.requeue_interrupted() == 5
        rerun = claim_all(reopened, math.inf)
        assert rerun == [f"c{i:02d}" for i in range(5, 50)]
        for i in range(50):
            call = reopened.get(f"c{i:02d}")
            assert call is not None
            assert (call.body, call.headers) == (bytes([i]) * 1000, [("X-N", str(i))])


def test_counts_reports_every_status_including_zero(store: CallStore, clock: FakeClock) -> None:
    assert store.counts() == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    for call_id in ["c1", "c2", "c3", "c4"]:
        store.enqueue(new_call(call_id))
    store.claim(clock.now)
    store.claim(clock.now)
    store.complete("c1", 200, 0.1)

    assert store.counts() == {"queued": 2, "running": 1, "done": 1, "failed": 0}


def test_prune_deletes_only_done_calls_older_than_cutoff(
    store: CallStore, clock: FakeClock
) -> None:
    for call_id in ["old", "new", "failed", "queued"]:
        store.enqueue(new_call(call_id))
    store.claim(clock.now)
    store.complete("old", 200, 0.1)
    clock.now += 3600
    store.claim(clock.now)
    store.complete("new", 200, 0.1)
    store.claim(clock.now)
    store.fail("failed", "refused")
    clock.now += 60

    assert store.prune(done_older_than=600) == 1

    assert store.get("old") is None
    assert [c.call_id for c in store.list()] == ["queued", "failed", "new"]


def test_list_returns_newest_first_without_body(store: CallStore, clock: FakeClock) -> None:
    for call_id in ["c1", "c2", "c3"]:
        store.enqueue(new_call(call_id, body=b"x" * 10))

    listed = store.list()

    assert [c.call_id for c in listed] == ["c3", "c2", "c1"]
    assert listed[0].body_size == 10
    assert not hasattr(listed[0], "body")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "failed"}, ["c4"]),
        ({"status": "queued"}, ["c3", "c1"]),
        ({"function": "other"}, ["c3", "c2"]),
        ({"status": "queued", "function": "other"}, ["c3"]),
        ({"limit": 2}, ["c4", "c3"]),
    ],
    ids=["status", "status-many", "function", "status-and-function", "limit"],
)
def test_list_with_filters_returns_matching_calls_newest_first(
    store: CallStore, clock: FakeClock, query: dict[str, Any], expected: list[str]
) -> None:
    # Leaves c1 queued, c2 running, c3 queued, c4 failed; c2 and c3 belong to "other".
    for call_id, function in [("c1", "hello"), ("c2", "other"), ("c3", "other"), ("c4", "hello")]:
        store.enqueue(new_call(call_id, function=function))
    claim_all(store, clock.now)
    store.fail("c4", "refused")
    store.retry_later("c1", "refused", delay=0)
    store.retry_later("c3", "refused", delay=0)

    assert [c.call_id for c in store.list(**query)] == expected


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.list(status="pending"),
        lambda s: s.list(status=""),
        lambda s: s.list(limit=0),
        lambda s: s.retry_later("c1", "e", delay=-1),
        lambda s: s.retry_later("c1", "e", delay=math.nan),
        lambda s: s.prune(done_older_than=-1),
    ],
    ids=[
        "unknown-status",
        "empty-status",
        "zero-limit",
        "negative-delay",
        "nan-delay",
        "negative-prune-age",
    ],
)
def test_invalid_argument_raises_value_error(
    store: CallStore, clock: FakeClock, call: Callable[[CallStore], object]
) -> None:
    store.enqueue(new_call("c1"))
    store.claim(clock.now)

    with pytest.raises(ValueError):
        call(store)
    assert store.counts()["running"] == 1


def test_open_of_newer_schema_version_raises_database_error(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()

    with pytest.raises(sqlite3.DatabaseError, match="version 99"):
        CallStore(path)
