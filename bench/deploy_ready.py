"""Benchmark 3: deploy to ready with a cached virtualenv, beside starting waitress by hand.

* deploy: ``POST /system/functions`` with a fresh name each round (``ready-<i>``), image
  ``hello:latest`` already stored, its virtualenv already cached; the clock runs from just
  before the POST until ``GET /system/function/<name>`` shows ``availableReplicas >= 1``
  AND a first ``GET /function/<name>`` answers 200 (both polled every 10 ms, the process
  provider's own health-poll interval). The function is removed after each round,
  outside the clock.
* baseline: the same stored build context's ``index.py`` run directly with the cached
  venv's python, with the environment the process provider gives a replica
  (``port``, ``bind_address=127.0.0.1``, ``PYTHONPYCACHEPREFIX`` warmed by an unmeasured
  start), timed until ``GET /_/health`` answers 200 and then a first ``GET /`` does.

One unmeasured warm-up of each, then 5 rounds alternating (bare first, then deploy
first, ...); medians. Goal: ratio deploy / bare < 1.5.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    PROCESSES,
    BenchError,
    Gateway,
    Ledger,
    entry,
    free_port,
    http_call,
    log,
    median,
)

ROUNDS = 5
POLL = 0.01
TIMEOUT = 60.0
GOAL_RATIO = 1.5
IMAGE = "hello:latest"


def _poll_ok(port: int, path: str, timeout: float, alive: Any = None) -> float:
    """Poll GET path until 200; returns time.perf_counter() of the 200. Bounded by timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BenchError(f"process serving :{port} exited before {path} answered")
        try:
            status, _ = http_call(port, "GET", path, timeout=2.0)
            if status == 200:
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(POLL)
    raise BenchError(f"GET :{port}{path} did not answer 200 within {timeout} s")


def find_venv_python(gw: Gateway, ctx: Path) -> Path:
    """The cached venv the gateway uses for ``ctx`` (the one whose python imports flask+waitress)."""
    from runtime.venvs import VenvCache

    texts = [
        p.read_text()
        for p in (ctx / "requirements.txt", ctx / "function" / "requirements.txt")
        if p.is_file()
    ]
    venv = VenvCache(gw.venv_dir).lookup(texts)
    if venv is not None:
        return Path(venv.python)
    for cand in sorted(gw.venv_dir.glob("*/bin/python")):
        probe = subprocess.run(
            [str(cand), "-c", "import flask, waitress"], capture_output=True, timeout=30
        )
        if probe.returncode == 0:
            return cand
    raise BenchError(f"no cached venv with flask and waitress under {gw.venv_dir}")


def _bare_round(python: Path, ctx: Path, scratch: Path) -> dict[str, Any]:
    port = free_port()
    home = scratch / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": f"{python.parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PYTHONPYCACHEPREFIX": str(scratch / "pycache"),
        "fprocess": "python index.py",
        "bind_address": "127.0.0.1",
        "port": str(port),
        "HOSTNAME": "bench-bare",
    }
    with open(scratch / "bare.log", "ab") as out:
        t0 = time.perf_counter()
        proc = PROCESSES.start(
            [str(python), "index.py"],
            cwd=ctx,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        alive = lambda: proc.poll() is None  # noqa: E731
        t_health = _poll_ok(port, "/_/health", TIMEOUT, alive)
        t_first = _poll_ok(port, "/", TIMEOUT, alive)
    finally:
        PROCESSES.stop(proc)
    return {"seconds": round(t_first - t0, 4), "health_s": round(t_health - t0, 4)}


def _deploy_round(gw: Gateway, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    gw.deploy(name, IMAGE)
    t_post = time.perf_counter()
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            st = gw.status(name)
            if st and st.get("availableReplicas", 0) >= 1:
                t_avail = time.perf_counter()
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not available within {TIMEOUT} s: {st}")
            time.sleep(POLL)
        t_first = _poll_ok(gw.port, f"/function/{name}", TIMEOUT)
    finally:
        gw.remove(name)
    return {
        "seconds": round(t_first - t0, 4),
        "post_s": round(t_post - t0, 4),
        "available_s": round(t_avail - t0, 4),
    }


def run(gw: Gateway, ledger: Ledger) -> list[dict[str, Any]]:
    ctx = gw.artifact_path(IMAGE)
    python = find_venv_python(gw, ctx)
    scratch = gw.root / "bare"
    log(f"deploy: bare baseline runs {ctx}/index.py with {python}")
    _bare_round(python, ctx, scratch)  # warm-up: fills the bytecode cache
    _deploy_round(gw, "ready-warmup")
    bare: list[dict[str, Any]] = []
    deploy: list[dict[str, Any]] = []
    for i in range(ROUNDS):
        order = ["bare", "deploy"] if i % 2 == 0 else ["deploy", "bare"]
        for kind in order:
            ledger.wait_quiet()
            before = ledger.sample()
            if kind == "bare":
                r = _bare_round(python, ctx, scratch)
                bare.append(r)
            else:
                r = _deploy_round(gw, f"ready-{i + 1}")
                deploy.append(r)
            r["foreign_load"] = round(ledger.foreign(before, ledger.sample()), 3)
            time.sleep(0.2)  # let the stopped process go before the next start
        log(
            f"deploy round {i + 1}: deploy-to-ready {deploy[-1]['seconds'] * 1000:.0f} ms, "
            f"bare start {bare[-1]['seconds'] * 1000:.0f} ms"
        )
    loads = [r["foreign_load"] for r in [*deploy, *bare]]
    d = median([r["seconds"] for r in deploy])
    b = median([r["seconds"] for r in bare])
    ratio = d / b if d and b else None
    return [
        entry(
            "deploy_to_ready_cached_venv",
            "s",
            d,
            "bare start of the same build context's index.py with the cached venv's python "
            "until /_/health and a first GET / answer 200",
            b,
            goal=f"ratio < {GOAL_RATIO}",
            met=ratio is not None and ratio < GOAL_RATIO,
            runs=[r["seconds"] for r in deploy],
            baseline_runs=[r["seconds"] for r in bare],
            notes=(
                "From just before POST /system/functions (fresh name, image stored, venv "
                "cached) to availableReplicas >= 1 and a first 200 from /function/<name>; "
                f"polls every {POLL * 1000:g} ms. Median time to availableReplicas >= 1: "
                f"{median([r['available_s'] for r in deploy])} s; bare time to /_/health: "
                f"{median([r['health_s'] for r in bare])} s. {ROUNDS} rounds alternating after "
                "one warm-up of each; medians. Other processes used a median "
                f"{median(loads):.0%} (max {max(loads):.0%}) of the machine during the rounds "
                "(measured over each round including the removal of the deployed function)."
            ),
            rounds={"deploy": deploy, "bare": bare},
        )
    ]
