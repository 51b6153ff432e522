"""LogStore: per-function JSON-lines logs, rotation and live followers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from runtime.logs import DROPPED_INSTANCE, LogRecord, LogStore, format_timestamp

START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class StepClock:
    """Each reading is one second after the previous one, so records have distinct times."""

    def __init__(self, start: float = START) -> None:
        self.next = start

    def __call__(self) -> float:
        now, self.next = self.next, self.next + 1
        return now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    opened = LogStore(tmp_path / "logs", clock=StepClock())
    yield opened
    opened.close()


def texts(records: list[LogRecord]) -> list[str]:
    return [record.text for record in records]


def append_lines(store: LogStore, count: int, name: str = "hello") -> None:
    for i in range(count):
        store.append(name, "hello-1", f"line {i}")


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (0.5, "1970-01-01T00:00:00.500000Z"),
        (START + 0.123456, "2027-01-15T08:00:00.123456Z"),
    ],
    ids=["epoch", "half-second", "microseconds"],
)
def test_format_timestamp_gives_rfc3339_utc_with_microseconds(ts: float, expected: str) -> None:
    assert format_timestamp(ts) == expected


def test_append_then_read_returns_records_oldest_first(store: LogStore) -> None:
    store.append("hello", "hello-1", "first")
    store.append("hello", "hello-2", "second")

    records = store.read("hello")

    assert records == [
        LogRecord("hello", "openfaas-fn", "hello-1", "2027-01-15T08:00:00.000000Z", "first", START),
        LogRecord(
            "hello", "openfaas-fn", "hello-2", "2027-01-15T08:00:01.000000Z", "second", START + 1
        ),
    ]


def test_read_of_function_without_logs_returns_empty_list(store: LogStore) -> None:
    assert store.read("never-ran") == []


def test_read_keeps_each_function_separate(store: LogStore) -> None:
    store.append("hello", "hello-1", "mine")
    store.append("other", "other-1", "theirs")

    assert texts(store.read("hello")) == ["mine"]


def test_to_json_has_exactly_the_wire_keys(store: LogStore) -> None:
    store.append("hello", "hello-1", "hi")

    wire = store.read("hello")[0].to_json()

    assert wire == {
        "name": "hello",
        "namespace": "openfaas-fn",
        "instance": "hello-1",
        "timestamp": "2027-01-15T08:00:00.000000Z",
        "text": "hi",
    }


def test_namespace_option_appears_in_records(tmp_path: Path) -> None:
    store = LogStore(tmp_path, namespace="team-a")
    store.append("hello", "hello-1", "hi")

    assert store.read("hello")[0].namespace == "team-a"
    store.close()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("with newline\n", "with newline"),
        ("windows\r\n", "windows"),
        ("inner\nnewline", "inner\nnewline"),
        ("", ""),
        ('quotes " and \\ and ünïcode \udcff', 'quotes " and \\ and ünïcode \udcff'),
    ],
    ids=["plain", "lf", "crlf", "inner-newline", "empty", "escapes-and-surrogate"],
)
def test_append_stores_one_record_without_trailing_newline(
    store: LogStore, text: str, expected: str
) -> None:
    store.append("hello", "hello-1", text)

    assert texts(store.read("hello")) == [expected]


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (None, ["line 0", "line 1", "line 2", "line 3"]),
        (0, ["line 0", "line 1", "line 2", "line 3"]),
        (-1, ["line 0", "line 1", "line 2", "line 3"]),
        (1, ["line 3"]),
        (2, ["line 2", "line 3"]),
        (10, ["line 0", "line 1", "line 2", "line 3"]),
    ],
    ids=["none", "zero", "negative", "one", "two", "more-than-stored"],
)
def test_read_with_tail_returns_last_records(
    store: LogStore, tail: int | None, expected: list[str]
) -> None:
    append_lines(store, 4)

    assert texts(store.read("hello", tail=tail)) == expected


@pytest.mark.parametrize(
    ("since", "tail", "expected"),
    [
        (START + 2, None, ["line 2", "line 3"]),
        (START + 1.5, None, ["line 2", "line 3"]),
        (START + 10, None, []),
        (START, 1, ["line 3"]),
        (START + 1, 5, ["line 1", "line 2", "line 3"]),
    ],
    ids=["inclusive-boundary", "between-records", "after-all", "with-tail", "tail-larger"],
)
def test_read_with_since_keeps_records_at_or_after_it(
    store: LogStore, since: float, tail: int | None, expected: list[str]
) -> None:
    append_lines(store, 4)  # at START, START+1, START+2, START+3

    assert texts(store.read("hello", since=since, tail=tail)) == expected


def test_append_over_max_bytes_rotates_keeping_recent_lines(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=1000, clock=StepClock())
    append_lines(store, 100)
    store.close()

    kept = texts(store.read("hello"))

    files = [tmp_path / "hello.log.1", tmp_path / "hello.log"]
    assert sorted(tmp_path.iterdir()) == sorted(files)
    assert all(0 < f.stat().st_size <= 1000 for f in files)
    stored_lines = sum(len(f.read_bytes().splitlines()) for f in files)
    assert kept == [f"line {i}" for i in range(100 - stored_lines, 100)]


def test_append_after_reopen_continues_size_count_and_rotates(tmp_path: Path) -> None:
    first = LogStore(tmp_path, max_bytes=1000, clock=StepClock())
    append_lines(first, 8)
    first.close()
    second = LogStore(tmp_path, max_bytes=1000, clock=StepClock(START + 100))

    append_lines(second, 8)

    assert (tmp_path / "hello.log.1").exists()
    assert (tmp_path / "hello.log").stat().st_size <= 1000
    second.close()


def test_append_after_crash_mid_line_keeps_new_record_readable(tmp_path: Path) -> None:
    (tmp_path / "hello.log").write_bytes(b'{"timestamp": "2027-01-15T08:00:00.000000Z", "ts')
    store = LogStore(tmp_path, clock=StepClock())

    store.append("hello", "hello-1", "after the crash")

    assert texts(store.read("hello")) == ["after the crash"]
    store.close()


def test_append_to_more_functions_than_open_file_limit_keeps_every_record(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path, max_open_files=2, clock=StepClock())
    names = ["a", "b", "c", "a", "c", "b", "a"]
    for i, name in enumerate(names):
        store.append(name, f"{name}-1", f"{name}{i}")

    assert {name: texts(store.read(name)) for name in "abc"} == {
        "a": ["a0", "a3", "a6"],
        "b": ["b1", "b5"],
        "c": ["c2", "c4"],
    }
    store.close()


def test_remove_deletes_current_and_rotated_logs(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes=1000, clock=StepClock())
    append_lines(store, 50)

    store.remove("hello")

    assert store.read("hello") == []
    assert list(tmp_path.iterdir()) == []
    store.append("hello", "hello-1", "fresh start")
    assert texts(store.read("hello")) == ["fresh start"]
    store.close()


def test_remove_of_function_without_logs_does_nothing(store: LogStore) -> None:
    store.remove("never-ran")


@pytest.mark.parametrize(
    "name",
    ["../etc", "a/b", "..", "", "Hello", "x" * 64],
    ids=["parent-prefix", "slash", "parent", "empty", "upper-case", "too-long"],
)
@pytest.mark.parametrize(
    "call",
    [
        lambda s, n: s.append(n, "i", "t"),
        lambda s, n: s.read(n),
        lambda s, n: s.remove(n),
        lambda s, n: asyncio.run(anext(s.follow(n, tail=None, since=None))),
    ],
    ids=["append", "read", "remove", "follow"],
)
def test_invalid_function_name_raises_value_error(
    store: LogStore, name: str, call: Callable[[LogStore, str], object]
) -> None:
    with pytest.raises(ValueError):
        call(store, name)
    assert store.followers(name) == 0


@pytest.mark.parametrize(
    "option",
    [{"max_bytes": 0}, {"max_open_files": 0}, {"follow_buffer": 0}],
    ids=["max-bytes", "max-open-files", "follow-buffer"],
)
def test_store_with_non_positive_limit_raises_value_error(
    tmp_path: Path, option: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        LogStore(tmp_path, **option)


async def next_record(follower: AsyncIterator[LogRecord]) -> LogRecord:
    return await asyncio.wait_for(anext(follower), timeout=5)


async def until_followed(store: LogStore, name: str, count: int = 1) -> None:
    while store.followers(name) != count:
        await asyncio.sleep(0.001)


def test_follow_yields_existing_records_then_new_ones(store: LogStore) -> None:
    append_lines(store, 2)

    async def scenario() -> list[str]:
        async with aclosing(store.follow("hello", tail=None, since=None)) as follower:
            seen = [await next_record(follower), await next_record(follower)]
            store.append("hello", "hello-1", "live 1")
            store.append("hello", "hello-1", "live 2")
            seen += [await next_record(follower), await next_record(follower)]
            return texts(seen)

    assert asyncio.run(scenario()) == ["line 0", "line 1", "live 1", "live 2"]


def test_follow_without_existing_records_waits_for_new_ones(store: LogStore) -> None:
    async def scenario() -> LogRecord:
        async with aclosing(store.follow("hello", tail=None, since=None)) as follower:
            pending = asyncio.ensure_future(next_record(follower))
            await until_followed(store, "hello")
            store.append("hello", "hello-1", "first ever")
            return await pending

    assert asyncio.run(scenario()).text == "first ever"


def test_follow_applies_tail_and_since_to_existing_records(store: LogStore) -> None:
    append_lines(store, 5)

    async def scenario() -> list[str]:
        async with aclosing(store.follow("hello", tail=2, since=START + 1)) as follower:
            seen = [await next_record(follower), await next_record(follower)]
            store.append("hello", "hello-1", "live")
            seen.append(await next_record(follower))
            return texts(seen)

    assert asyncio.run(scenario()) == ["line 3", "line 4", "live"]


def test_follow_receives_records_appended_from_another_thread(store: LogStore) -> None:
    async def scenario() -> list[str]:
        async with aclosing(store.follow("hello", tail=None, since=None)) as follower:
            pending = asyncio.ensure_future(next_record(follower))
            await until_followed(store, "hello")
            writer = threading.Thread(target=append_lines, args=(store, 3))
            writer.start()
            seen = [await pending, await next_record(follower), await next_record(follower)]
            writer.join()
            return texts(seen)

    assert asyncio.run(scenario()) == ["line 0", "line 1", "line 2"]


def test_follow_reader_too_slow_gets_dropped_marker_before_newest(tmp_path: Path) -> None:
    store = LogStore(tmp_path, follow_buffer=2, clock=StepClock())

    async def scenario() -> list[LogRecord]:
        async with aclosing(store.follow("hello", tail=None, since=None)) as follower:
            pending = asyncio.ensure_future(next_record(follower))
            await until_followed(store, "hello")
            append_lines(store, 6)  # without yielding to the reader: 4 overflow a buffer of 2
            return [await pending, await next_record(follower), await next_record(follower)]

    seen = asyncio.run(scenario())

    assert [(r.instance, r.text, r.ts) for r in seen] == [
        (DROPPED_INSTANCE, "[4 log records dropped: reader too slow]", START + 4),
        ("hello-1", "line 4", START + 4),
        ("hello-1", "line 5", START + 5),
    ]
    store.close()


@pytest.mark.parametrize("stop", ["break", "aclose", "cancel"])
def test_follow_stopped_by_consumer_unregisters_follower(store: LogStore, stop: str) -> None:
    append_lines(store, 1)

    async def consume() -> None:
        async for _ in store.follow("hello", tail=None, since=None):
            if stop == "break":
                break

    async def scenario() -> int:
        if stop == "aclose":
            follower = store.follow("hello", tail=None, since=None)
            await next_record(follower)
            await follower.aclose()
        else:
            task = asyncio.ensure_future(consume())
            if stop == "cancel":
                await until_followed(store, "hello")
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # After `break` the generator is closed by the loop's finalizer on a later turn.
        for _ in range(10):
            await asyncio.sleep(0)
        return store.followers("hello")

    assert asyncio.run(scenario()) == 0


def test_append_after_follower_was_cancelled_is_stored_with_no_follower(store: LogStore) -> None:
    async def scenario() -> None:
        follower = store.follow("hello", tail=None, since=None)
        pending = asyncio.ensure_future(next_record(follower))
        await until_followed(store, "hello")
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await follower.aclose()

    asyncio.run(scenario())
    store.append("hello", "hello-1", "nobody listens")

    assert texts(store.read("hello")) == ["nobody listens"]
    assert store.followers("hello") == 0
