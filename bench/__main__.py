"""``python -m bench`` (``make bench``): run every benchmark, write bench/results.json, print a table.

One gateway (``python -m runtime``) on a free loopback port, with a fresh temporary state
directory and a virtualenv cache (``OFC_VENV_DIR``) shared by the whole run. The cache is
warmed first by deploying examples/hello (that build is timed and reported, not
benchmarked). Every process started is stopped by its PID at the end, also on error or
SIGTERM; the temporary directory is removed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import async_drain, build, deploy_ready, harness, push_to_live, router, sync_invoke
from bench.harness import PROCESSES, Gateway, Ledger, ensure_wrk, log, skipped

OUT = Path(__file__).resolve().parent / "results.json"

# (module, names, unit, baseline name, goal) of each entry, for "skipped" records.
PLANNED: list[tuple[Any, list[tuple[str, str, str, str | None]]]] = [
    (
        sync_invoke,
        [
            (f"sync_c{c}_{what}", unit, f"direct to the function process, c{c}", goal)
            for c in sync_invoke.CONCURRENCIES
            for what, unit, goal in (
                ("throughput", "req/s", ">= 0.85" if c == 50 else None),
                ("latency_p50", "ms", "added p50 (value - baseline) < 1 ms"),
                ("latency_p99", "ms", None),
                ("gateway_cpu_per_request", "µs", "< 100 µs"),
            )
        ],
    ),
    (
        async_drain,
        [
            ("async_drain_1000_calls", "calls/s", "1,000 synchronous calls", None),
            ("async_enqueue_1000_calls", "calls/s", "1,000 synchronous calls", None),
        ],
    ),
    (
        deploy_ready,
        [("deploy_to_ready_cached_venv", "s", "bare start of index.py", "ratio < 1.5")],
    ),
    (
        push_to_live,
        [
            ("push_to_live_10_users_at_once", "s", "one user pushing alone", None),
            ("push_to_live_first_deploy", "s", "bare minimum", "< 2 s"),
            ("push_to_live_one_line_change", "s", "bare minimum", "< 1.5 s"),
            *(
                (name, "s", push_to_live.CONTAINER_BASELINE, "< 8 s")
                for name in push_to_live.CONTAINER_ENTRIES
            ),
        ],
    ),
    (build, build.PLANNED),
    (router, router.PLANNED),
]


def _machine() -> dict[str, Any]:
    wrk = None
    try:
        out = subprocess.run([harness.WRK, "-v"], capture_output=True, text=True, timeout=10)
        wrk = (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        pass
    return {
        "cpus": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "wrk": wrk,
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"
    return str(x)


def summary(benchmarks: list[dict[str, Any]]) -> str:
    rows = [("benchmark", "value", "baseline", "ratio", "goal", "met")]
    for b in benchmarks:
        unit = b["unit"]
        met = {True: "yes", False: "NO", None: "-"}[b["met"]]
        if b.get("skipped"):
            met = "skipped"
        value = f"{_fmt(b['value'])} {unit}"
        if "delta" in b and b["delta"] is not None:
            value += f" ({b['delta']:+.3g} {unit})"
        rows.append(
            (
                b["name"],
                value,
                f"{_fmt(b['baseline']['value'])} {unit}",
                _fmt(b["ratio"]),
                b["goal"] or "-",
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _run_one(
    module: Any, planned: list[tuple[str, str, str, str | None]], call: Callable[[], Any]
) -> tuple[list[dict[str, Any]], bool]:
    """Run one benchmark; on error, 'skipped' records carrying the reason. (records, ok)."""
    name = module.__name__.rsplit(".", 1)[1]
    started = time.monotonic()
    log(f"{name}: start")
    try:
        records = call()
    except Exception as exc:  # one benchmark failing must not lose the others' figures
        traceback.print_exc()
        reason = f"{name} failed: {type(exc).__name__}: {exc}"[:2000]
        return [skipped(n, u, b, g, reason) for n, u, b, g in planned], False
    log(f"{name}: done in {time.monotonic() - started:.0f} s")
    return records, True


def main() -> int:
    # SIGTERM (e.g. from a CI timeout) unwinds through the finally blocks and atexit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ofc-bench-"))
    gw = Gateway(root / "gw", root / "venvs")
    benchmarks: list[dict[str, Any]] = []
    ok = True
    notes: list[str] = []
    try:
        log(f"scratch {root}; gateway on 127.0.0.1:{gw.port}")
        gw.start()
        gw.store_example("hello:latest")
        t0 = time.monotonic()
        gw.deploy("hello", "hello:latest")
        gw.wait_ready("hello", timeout=240.0)
        warm = time.monotonic() - t0
        notes.append(
            f"pre-warm: first deploy of examples/hello, virtualenv built into the shared "
            f"OFC_VENV_DIR, took {warm:.1f} s (not a benchmark)"
        )
        log(notes[-1])

        ledger = Ledger(gw.pid)
        sync_planned, async_planned, deploy_planned, push_planned, build_planned, router_planned = (
            p for _, p in PLANNED
        )
        why_not = ensure_wrk()
        if why_not:
            log(f"sync_invoke: SKIPPED: {why_not}")
            benchmarks += [skipped(n, u, b, g, why_not) for n, u, b, g in sync_planned]
        else:
            records, good = _run_one(sync_invoke, sync_planned, lambda: sync_invoke.run(gw, ledger))
            benchmarks += records
            ok &= good
        if why_not:
            log(f"router: SKIPPED: {why_not}")
            benchmarks += [skipped(n, u, b, g, why_not) for n, u, b, g in router_planned]
        else:
            records, good = _run_one(router, router_planned, lambda: router.run(gw, ledger))
            benchmarks += records
            ok &= good
        records, good = _run_one(async_drain, async_planned, lambda: async_drain.run(gw, ledger))
        benchmarks += records
        ok &= good
        records, good = _run_one(deploy_ready, deploy_planned, lambda: deploy_ready.run(gw, ledger))
        benchmarks += records
        ok &= good
        records, good = _run_one(push_to_live, push_planned, lambda: push_to_live.run(gw.venv_dir))
        benchmarks += records
        ok &= good
        why_not = build.why_not()
        if why_not:
            log(f"build: SKIPPED: {why_not}")
            benchmarks += [skipped(n, u, b, g, why_not) for n, u, b, g in build_planned]
        else:
            records, good = _run_one(
                build, build_planned, lambda: build.run(root / "build", gw.venv_dir, ledger)
            )
            benchmarks += records
            ok &= good
        notes.append(
            f"waited {ledger.waited:.0f} s in all for other processes' CPU load to drop below "
            f"{Ledger.QUIET:.0%} of the machine before measurements (budget "
            f"{Ledger.WAIT_BUDGET:.0f} s); each entry's notes give the load seen while it ran"
        )
    except Exception:
        traceback.print_exc()
        print(gw.log_tail(), file=sys.stderr)
        ok = False
    finally:
        gw.stop()
        PROCESSES.stop_all()
        if not ok:
            print(f"--- gateway log tail ---\n{gw.log_tail(2000)}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)

    result = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "duration_s": round(time.monotonic() - started, 1),
        "notes": notes,
        "benchmarks": benchmarks,
    }
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, OUT)
    print()
    print(summary(benchmarks))
    print(f"\nwrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT} "
          f"in {result['duration_s']:.0f} s")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
