"""Benchmark 2: draining 1,000 async calls, beside the same 1,000 calls made synchronously.

One round of each, 3 rounds alternating (sync first, then async first, ...), medians:

* async: 8 client threads, each with one keep-alive connection, POST 1,000 calls to
  ``/async-function/hello`` as fast as they are answered (each with its own
  ``X-Call-Id`` ``bench-<round>-<i>``), while the gateway's queue workers
  (``OFC_QUEUE_WORKERS`` default, 4) drain them. ``GET /system/queue?status=failed``
  is polled every 0.1 s until ``counts.done`` has grown by 1,000 (bounded).
  Drain rate = 1,000 / (last ``updated_at`` - first ``enqueued_at`` of this round's
  calls), both read from the gateway's ``queue.sqlite3`` (read-only), i.e. from the
  first enqueue to the last completion on the gateway's own clock. Enqueue rate =
  1,000 / (client time from the first POST sent to the last 202 received).
* baseline: the same client (8 threads, keep-alive) POSTs the same body 1,000 times to
  ``/function/hello``; rate = 1,000 / (first request sent to last answer received).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.harness import (
    BenchError,
    Gateway,
    KeepAlive,
    Ledger,
    cpu_seconds,
    entry,
    io_counters,
    log,
    median,
)

CALLS = 1000
CLIENTS = 8
ROUNDS = 3
WARMUP_CALLS = 50
BODY = b"bench"
LOAD_TIMEOUT = 60.0  # seconds one burst of 1,000 requests may take
DRAIN_TIMEOUT = 90.0  # seconds the queue may take to finish one round
FUNCTION = "hello"


def _burst(
    port: int, path: str, n: int, headers: Callable[[int], dict[str, str]]
) -> tuple[float, float, list[int]]:
    """``n`` POSTs from CLIENTS threads; (first send, last answer) epoch times and statuses."""
    counter = itertools.count()  # next() on it is atomic under the GIL
    statuses = [0] * n
    ends = [0.0] * n
    deadline = time.monotonic() + LOAD_TIMEOUT
    failures: list[BaseException] = []

    def client() -> None:
        conn = KeepAlive(port)
        try:
            while time.monotonic() < deadline:
                i = next(counter)
                if i >= n:
                    return
                statuses[i] = conn.request("POST", path, BODY, headers(i))
                ends[i] = time.time()
        except BaseException as exc:  # reported below, with the count of failed calls
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_TIMEOUT + 5)
    if failures:
        raise BenchError(f"{path}: client error {failures[0]!r}")
    if any(t.is_alive() for t in threads) or not all(ends):
        raise BenchError(f"{path}: {n} calls did not finish within {LOAD_TIMEOUT} s")
    return start, max(ends), statuses


def _wait_done(gw: Gateway, target: int) -> float:
    """Poll until counts.done >= target; epoch time it was seen. Raises on failed calls."""
    failed0 = None
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        status, body = gw.system("GET", "/system/queue?status=failed")
        if status != 200:
            raise BenchError(f"/system/queue: HTTP {status}")
        counts = json.loads(body)["counts"]
        if failed0 is None:
            failed0 = counts["failed"]
        if counts["done"] >= target:
            return time.time()
        if counts["failed"] > failed0:
            raise BenchError(f"async calls were parked as failed: {counts}")
        time.sleep(0.1)
    raise BenchError(f"queue did not drain within {DRAIN_TIMEOUT} s: {gw.queue_counts()}")


def _round_times(gw: Gateway, prefix: str) -> tuple[int, int, float, float] | None:
    """(done, ok, first enqueued_at, last updated_at) of the calls whose id starts with prefix."""
    path = gw.state_dir / "queue.sqlite3"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute(
                "SELECT count(*), sum(result_status = 200), min(enqueued_at), max(updated_at)"
                " FROM calls WHERE call_id LIKE ? AND status = 'done'",
                (prefix + "%",),
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log(f"async: cannot read the queue database ({exc}); using client times")
        return None
    return int(row[0]), int(row[1] or 0), float(row[2]), float(row[3])


def _async_round(gw: Gateway, ledger: Ledger, tag: str, n: int) -> dict[str, Any]:
    done0 = gw.queue_counts()["done"]
    ledger.wait_quiet()
    before = ledger.sample()
    cpu0, io0 = cpu_seconds(gw.pid), io_counters(gw.pid)
    prefix = f"bench-{tag}-"
    start, acked, statuses = _burst(
        gw.port,
        f"/async-function/{FUNCTION}",
        n,
        lambda i: {"X-Call-Id": f"{prefix}{i:05d}"},
    )
    bad = [s for s in statuses if s != 202]
    if bad:
        raise BenchError(f"async: {len(bad)} of {n} enqueues not answered 202 (e.g. {bad[0]})")
    seen = _wait_done(gw, done0 + n)
    cpu, io1 = cpu_seconds(gw.pid) - cpu0, io_counters(gw.pid)
    foreign = ledger.foreign(before, ledger.sample())
    times = _round_times(gw, prefix)
    if times is not None:
        done, ok, first, last = times
        if done != n or ok != n:
            raise BenchError(f"async: {done} of {n} calls done, {ok} with status 200")
        drain, source = last - first, "gateway clock (queue.sqlite3)"
    else:
        drain, source = seen - start, "client clock (poll, 0.1 s resolution)"
    return {
        "drain_calls_per_s": round(n / drain, 1),
        "enqueue_calls_per_s": round(n / (acked - start), 1),
        "drain_seconds": round(drain, 3),
        "enqueue_seconds": round(acked - start, 3),
        "gateway_cpu_us_per_call": round(cpu / n * 1e6, 1),
        "gateway_write_syscalls_per_call": round((io1["syscw"] - io0["syscw"]) / n, 1),
        "gateway_bytes_written_per_call": round((io1["wchar"] - io0["wchar"]) / n),
        "clock": source,
        "foreign_load": round(foreign, 3),
    }


def _sync_round(gw: Gateway, ledger: Ledger, n: int) -> dict[str, Any]:
    ledger.wait_quiet()
    before = ledger.sample()
    cpu0, io0 = cpu_seconds(gw.pid), io_counters(gw.pid)
    start, end, statuses = _burst(gw.port, f"/function/{FUNCTION}", n, lambda i: {})
    cpu, io1 = cpu_seconds(gw.pid) - cpu0, io_counters(gw.pid)
    foreign = ledger.foreign(before, ledger.sample())
    bad = [s for s in statuses if s != 200]
    if bad:
        raise BenchError(f"sync: {len(bad)} of {n} calls not answered 200 (e.g. {bad[0]})")
    return {
        "calls_per_s": round(n / (end - start), 1),
        "seconds": round(end - start, 3),
        "gateway_cpu_us_per_call": round(cpu / n * 1e6, 1),
        "gateway_write_syscalls_per_call": round((io1["syscw"] - io0["syscw"]) / n, 1),
        "gateway_bytes_written_per_call": round((io1["wchar"] - io0["wchar"]) / n),
        "foreign_load": round(foreign, 3),
    }


def run(gw: Gateway, ledger: Ledger) -> list[dict[str, Any]]:
    _sync_round(gw, ledger, WARMUP_CALLS)
    _async_round(gw, ledger, "warmup", WARMUP_CALLS)
    sync: list[dict[str, Any]] = []
    asyn: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        order = ["sync", "async"] if i % 2 == 0 else ["async", "sync"]
        for kind in order:
            if kind == "sync":
                r = _sync_round(gw, ledger, CALLS)
                sync.append(r)
                log(
                    f"async round {i + 1} sync baseline: {r['calls_per_s']:.0f} calls/s, "
                    f"gateway {r['gateway_cpu_us_per_call']:.0f} µs/call, "
                    f"foreign {r['foreign_load']:.0%}"
                )
            else:
                r = _async_round(gw, ledger, f"r{i + 1}", CALLS)
                asyn.append(r)
                log(
                    f"async round {i + 1} async: drain {r['drain_calls_per_s']:.0f} calls/s, "
                    f"enqueue {r['enqueue_calls_per_s']:.0f} calls/s, "
                    f"gateway {r['gateway_cpu_us_per_call']:.0f} µs/call, "
                    f"foreign {r['foreign_load']:.0%}"
                )
    sync_rates = [r["calls_per_s"] for r in sync]
    drain_rates = [r["drain_calls_per_s"] for r in asyn]
    enqueue_rates = [r["enqueue_calls_per_s"] for r in asyn]
    baseline_name = (
        f"the same {CALLS} calls synchronously through /function/{FUNCTION}, "
        f"same client ({CLIENTS} threads, keep-alive)"
    )
    loads = [r["foreign_load"] for r in [*sync, *asyn]]
    cpu_note = (
        f"Gateway CPU per call: async (enqueue + drain) "
        f"{median([r['gateway_cpu_us_per_call'] for r in asyn])} µs, sync "
        f"{median([r['gateway_cpu_us_per_call'] for r in sync])} µs. "
        "Gateway write-type syscalls (/proc/<pid>/io syscw) and bytes written (wchar, files "
        "and sockets) per call: async "
        f"{median([r['gateway_write_syscalls_per_call'] for r in asyn])} / "
        f"{median([r['gateway_bytes_written_per_call'] for r in asyn])} B, sync "
        f"{median([r['gateway_write_syscalls_per_call'] for r in sync])} / "
        f"{median([r['gateway_bytes_written_per_call'] for r in sync])} B. "
        f"Queue workers: OFC_QUEUE_WORKERS default (4). Clock: {asyn[-1]['clock']}. "
        f"Other processes used a median {median(loads):.0%} (max {max(loads):.0%}) of the "
        "machine during these rounds."
    )
    return [
        entry(
            "async_drain_1000_calls",
            "calls/s",
            median(drain_rates),
            baseline_name,
            median(sync_rates),
            goal=None,
            met=None,
            runs=drain_rates,
            baseline_runs=sync_rates,
            notes=(
                f"{CALLS} POSTs to /async-function/{FUNCTION} from {CLIENTS} client threads; "
                "rate from the first enqueue to the last call done. No goal in the issue. "
                f"{ROUNDS} rounds alternating with the baseline, medians. {cpu_note}"
            ),
            rounds={"async": asyn, "sync": sync},
        ),
        entry(
            "async_enqueue_1000_calls",
            "calls/s",
            median(enqueue_rates),
            baseline_name,
            median(sync_rates),
            goal=None,
            met=None,
            runs=enqueue_rates,
            baseline_runs=sync_rates,
            notes=(
                "Client time from the first POST sent to the last 202 received (the queue "
                "workers drain at the same time). No goal in the issue."
            ),
        ),
    ]
