"""Benchmark: the edge router (``python -m router``), beside going straight to its upstream
and beside Debian's nginx as a reverse proxy on the same route, in the same run.

Two upstreams:

* **trivial**: an nginx answering ``200 Hello, world!`` on ``/function/*`` and a fixed
  function list on ``/system/functions``, standing in for the gateway. This measures
  the router's own cost: the route, the access decision (owner label from the cached
  list), header rewriting, the pooled upstream call, metrics and the access log (to a
  file). Goals: >= 12,000 req/s at c50 and < 100 µs of router CPU per request.
* **function**: the real gateway in front of examples/hello deployed as ``alice-hello``
  (owner label ``alice``), a python3-http function. Goal: >= 0.85x the throughput of
  calling the gateway directly, at c50.

Each is reached three ways: direct (``/function/alice-hello`` on the upstream), through
the router (``Host: alice.localhost``, ``/hello``) and through nginx (a ``server_name``
regex mapping ``<user>.localhost/<fn>`` to ``/function/<user>-<fn>``, keep-alive
upstream, access log buffered like the router's; ``worker_processes auto`` as Debian
ships it). For each concurrency: a 1 s warm-up each way, then ``ROUNDS`` rounds of
``wrk -t2 -cN -d5s --latency``, the three ways in rotating order; medians. CPU per
request: utime+stime (``/proc/<pid>/stat``, all threads; for nginx the master and its
workers) over one wrk run / the requests wrk reports.

Every process is started through ``PROCESSES`` and stopped by its PID; nginx runs from
its own configuration in the bench's scratch directory, on loopback ports only.
``python -m bench.router`` runs this benchmark alone (with its own gateway) and updates
its entries in bench/results.json, keeping the others.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import (
    HOST,
    PROCESSES,
    REPO,
    BenchError,
    Gateway,
    Ledger,
    child_pids,
    cpu_seconds,
    deadline_loop,
    entry,
    free_port,
    http_call,
    log,
    median,
    system_busy,
)

NGINX = "/usr/sbin/nginx"
SECONDS = 5
WARMUP_SECONDS = 1
ROUNDS = 3
RETRY_ABOVE = 0.15  # share of the machine other processes may use during a kept run
MAX_RETRIES = 4
GOAL_RPS = 12_000.0
GOAL_CPU_US = 100.0
GOAL_RATIO = 0.85
USER, FUNCTION = "alice", "hello"
NAME = f"{USER}-{FUNCTION}"
OWNER_LABEL = "com.openfaas.cloud.git-owner"
CASES = (("trivial", (50, 10)), ("function", (50,)))
WAYS = ("direct", "router", "nginx")

PLANNED: list[tuple[str, str, str, str | None]] = [
    (f"router_{case}_c{c}_{what}", unit, baseline, goal)
    for case, concurrencies in CASES
    for c in concurrencies
    for what, unit, baseline, goal in (
        ("throughput", "req/s", f"direct to the upstream, c{c}",
         (f">= {GOAL_RPS:,.0f} req/s" if case == "trivial" else f">= {GOAL_RATIO}")
         if c == 50 else None),
        ("latency_p50", "ms", f"direct to the upstream, c{c}", None),
        ("latency_p99", "ms", f"direct to the upstream, c{c}", None),
        ("cpu_per_request", "µs", f"nginx as reverse proxy on the same route, c{c}",
         f"< {GOAL_CPU_US:g} µs" if case == "trivial" else None),
    )
]  # fmt: skip


# -- nginx ------------------------------------------------------------------------------------------
def ensure_nginx() -> str | None:
    """None when nginx is usable; else why not (after trying apt-get install -y nginx)."""
    if os.access(NGINX, os.X_OK):
        return None
    if shutil.which("apt-get") is None:
        return "nginx is not installed and apt-get is not available"
    log("nginx missing: apt-get install -y nginx")
    done = None
    for argv in (["apt-get", "install", "-y", "nginx"], ["apt-get", "update"],
                 ["apt-get", "install", "-y", "nginx"]):  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)} failed: {exc}"
        if argv[1] == "install" and done.returncode == 0 and os.access(NGINX, os.X_OK):
            return None
    return f"nginx could not be installed: {done.stderr.strip()[-300:] if done else ''}"


_COMMON = """
worker_processes {workers};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
{body}
}}
"""

_TRIVIAL = """
  access_log off;
  server {{
    listen {host}:{port};
    location = /system/functions {{
      default_type application/json;
      return 200 '{listing}';
    }}
    location / {{
      default_type text/plain;
      return 200 'Hello, world!\\n';
    }}
  }}
"""

_PROXY_SERVER = """
  upstream {name} {{
    server {host}:{upstream_port};
    keepalive 64;
  }}
  server {{
    listen {host}:{port};
    server_name ~^(?<user>[a-z0-9-]+)\\.localhost$;
    location ~ ^/(?<fn>[a-z0-9-]+)(?<rest>/.*)?$ {{
      proxy_pass http://{name}/function/$user-$fn$rest$is_args$args;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}
"""


class Nginx:
    """One nginx master (and its workers) run from a configuration file of ours."""

    def __init__(self, directory: Path, body: str, workers: str) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(_COMMON.format(workers=workers, dir=self.dir, body=body))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int, timeout: float = 10.0) -> None:
        with open(self.dir / "stdout.log", "ab") as out:
            self.proc = PROCESSES.start(
                [NGINX, "-c", str(self.conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_listening(self.proc, port, timeout, lambda: self.error_log())

    def cpu(self) -> float:
        """CPU seconds of the master and its workers."""
        assert self.proc is not None
        total = cpu_seconds(self.proc.pid)
        for pid in child_pids(self.proc.pid):
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def error_log(self) -> str:
        try:
            return (self.dir / "error.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no error log)"

    def stop(self) -> None:
        # SIGTERM to the master by its PID: nginx's fast shutdown, workers included.
        if self.proc is not None:
            PROCESSES.stop(self.proc)


# -- the router ------------------------------------------------------------------------------------
class Router:
    """A ``python -m router`` process on a free loopback port."""

    def __init__(self, directory: Path, gateway_url: str, secrets_dir: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.dir / "router.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OFC_")}
        self.env.update(
            OFC_ROUTER_HOST=HOST,
            OFC_ROUTER_PORT=str(self.port),
            OFC_PUBLIC_PORT=str(self.port),
            OFC_DOMAIN="localhost",
            OFC_GATEWAY_URL=gateway_url,
            OFC_ROUTER_GATEWAY_SECRETS_DIR=str(secrets_dir),
            OFC_ROUTER_ACCESS_LOG=str(self.dir / "access.log"),
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = PROCESSES.start(
                [sys.executable, "-m", "router"], cwd=REPO, env=self.env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_listening(self.proc, self.port, timeout, self.log_tail)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no router log)"

    def stop(self) -> None:
        if self.proc is not None:
            PROCESSES.stop(self.proc)


def _wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float, tail: Any) -> None:
    for _ in deadline_loop(timeout, 0.05):
        if proc.poll() is not None:
            raise BenchError(f"{proc.args[0]} exited early:\n{tail()}")
        try:
            status, _ = http_call(port, "GET", "/healthz", timeout=1)
            if status:
                return
        except OSError:
            continue
    raise BenchError(f"{proc.args[0]} did not listen on :{port} within {timeout} s:\n{tail()}")


# -- one measurement ---------------------------------------------------------------------------------
class Setup:
    """The processes of one case: the upstream, the router and the nginx proxy."""

    def __init__(
        self, name: str, urls: dict[str, tuple[int, str, str | None]], router: Router, nginx: Nginx,
        upstream_cpu: Any, unledgered_cpu: Any,
    ) -> None:  # fmt: skip
        self.name = name
        self.urls = urls  # way -> (port, path, Host header or None)
        self.router = router
        self.nginx = nginx
        self.upstream_cpu = upstream_cpu  # () -> CPU seconds of the upstream (and function)
        # () -> CPU seconds of the processes this bench started that the ledger does not
        # count as its own (routers, nginx): not "other processes" loading the machine.
        self.unledgered_cpu = unledgered_cpu

    def measure(self, way: str, connections: int, ledger: Ledger) -> dict[str, Any]:
        port, path, host = self.urls[way]
        url = f"http://{HOST}:{port}{path}"
        ledger.wait_quiet()
        before = ledger.sample()
        m0 = self.unledgered_cpu()
        r0, n0, u0 = cpu_seconds(self.router.pid), self.nginx.cpu(), self.upstream_cpu()
        busy0, total0 = system_busy()
        res = harness.run_wrk(url, connections, SECONDS, host=host)
        busy1, total1 = system_busy()
        r1, n1, u1 = cpu_seconds(self.router.pid), self.nginx.cpu(), self.upstream_cpu()
        m1 = self.unledgered_cpu()
        after = ledger.sample()
        wall = max(after[0] - before[0], 1e-6)
        foreign = max(0.0, ledger.foreign(before, after) - (m1 - m0) / (wall * ledger.cpus))
        n = max(res.requests, 1)
        return {
            "rps": round(res.rps, 1),
            "requests": res.requests,
            "p50_ms": round(res.p50_ms, 3),
            "p99_ms": round(res.p99_ms, 3),
            "router_cpu_us_per_req": round((r1 - r0) / n * 1e6, 1),
            "nginx_cpu_us_per_req": round((n1 - n0) / n * 1e6, 1),
            "upstream_cpu_us_per_req": round((u1 - u0) / n * 1e6, 1),
            "machine_busy": round((busy1 - busy0) / max(total1 - total0, 1), 3),
            "foreign_load": round(foreign, 3),
            "errors": res.non_2xx + res.socket_errors,
        }

    def check(self) -> None:
        """Every way answers 200 with the greeting before anything is measured."""
        for way, (port, path, host) in self.urls.items():
            status, body = http_call(port, "GET", path, headers={"Host": host} if host else None)
            if status != 200 or b"Hello" not in body:
                raise BenchError(f"{self.name} {way}: :{port}{path} (Host {host}) answered "
                                 f"{status} {body[:200]!r}")  # fmt: skip

    def run(self, concurrencies: tuple[int, ...], ledger: Ledger) -> dict[int, dict[str, list]]:  # type: ignore[type-arg]
        self.check()
        retries = MAX_RETRIES
        out: dict[int, dict[str, list]] = {}  # type: ignore[type-arg]
        for conns in concurrencies:
            for port, path, host in self.urls.values():
                harness.run_wrk(f"http://{HOST}:{port}{path}", conns, WARMUP_SECONDS, host=host)
            runs: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
            for i in range(ROUNDS):
                order = WAYS[i % 3 :] + WAYS[: i % 3]  # each way first once
                for way in order:
                    r = self.measure(way, conns, ledger)
                    while r["foreign_load"] > RETRY_ABOVE and retries > 0:
                        retries -= 1
                        log(f"router {self.name} c{conns} {way}: other processes used "
                            f"{r['foreign_load']:.0%} of the machine; running it again")  # fmt: skip
                        r = self.measure(way, conns, ledger)
                    runs[way].append(r)
                    log(f"router {self.name} c{conns} round {i + 1} {way:6}: {r['rps']:8.0f} req/s "
                        f"p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms router "
                        f"{r['router_cpu_us_per_req']:.0f} µs/req nginx {r['nginx_cpu_us_per_req']:.0f}"
                        f" µs/req errors {r['errors']} foreign {r['foreign_load']:.0%}")  # fmt: skip
            out[conns] = runs
        return out


# -- entries ---------------------------------------------------------------------------------------------
def _col(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in runs]


def _entries(case: str, conns: int, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    direct, via, ngx = runs["direct"], runs["router"], runs["nginx"]
    errors = {way: sum(r["errors"] for r in rs) for way, rs in runs.items()}
    loads = [r["foreign_load"] for rs in runs.values() for r in rs]
    upstream = ("an nginx answering 200 (trivial upstream)" if case == "trivial"
                else "the gateway in front of examples/hello (python3-http)")  # fmt: skip
    how = (
        f"Upstream: {upstream}. wrk -t2 -c{conns} -d{SECONDS}s --latency, {ROUNDS} rounds of "
        "direct / router / nginx in rotating order after a 1 s warm-up each; medians. Direct: "
        "GET /function/alice-hello on the upstream; router and nginx: GET /hello with Host "
        f"alice.localhost. Other processes used a median {median(loads):.0%} (max "
        f"{max(loads):.0%}) of the machine during these runs."
    )
    if any(errors.values()):
        how += f" WARNING: wrk counted errors (non-2xx or socket): {errors}."
    rps = {way: median(_col(rs, "rps")) for way, rs in runs.items()}
    p50 = {way: median(_col(rs, "p50_ms")) for way, rs in runs.items()}
    p99 = {way: median(_col(rs, "p99_ms")) for way, rs in runs.items()}
    cpu_router = median(_col(via, "router_cpu_us_per_req"))
    cpu_nginx = median(_col(ngx, "nginx_cpu_us_per_req"))
    nginx_ref = {
        "name": "Debian nginx as reverse proxy on the same route, measured in this run",
        "rps": rps["nginx"], "p50_ms": p50["nginx"], "p99_ms": p99["nginx"],
        "cpu_us_per_req": cpu_nginx, "runs": ngx,
    }  # fmt: skip
    at_c50 = conns == 50
    ratio = rps["router"] / rps["direct"] if rps["router"] and rps["direct"] else None
    if case == "trivial":
        goal = f">= {GOAL_RPS:,.0f} req/s" if at_c50 else None
        met = (rps["router"] is not None and rps["router"] >= GOAL_RPS) if at_c50 else None
    else:
        goal = f">= {GOAL_RATIO}" if at_c50 else None
        met = (ratio is not None and ratio >= GOAL_RATIO) if at_c50 else None
    if met and errors["router"]:
        met = False
    prefix = f"router_{case}_c{conns}"
    baseline = f"direct to the upstream, c{conns}"
    return [
        entry(f"{prefix}_throughput", "req/s", rps["router"], baseline, rps["direct"],
              goal=goal, met=met, runs=_col(via, "rps"), baseline_runs=_col(direct, "rps"),
              notes=how, rounds=runs, nginx=nginx_ref,
              nginx_ratio=round(rps["router"] / rps["nginx"], 3) if rps["nginx"] else None),
        entry(f"{prefix}_latency_p50", "ms", p50["router"], baseline, p50["direct"],
              goal=None, met=None, runs=_col(via, "p50_ms"), baseline_runs=_col(direct, "p50_ms"),
              notes=f"wrk keeps every connection busy, so p50 follows {conns} / req/s. {how}",
              delta=_delta(p50["router"], p50["direct"]), nginx=p50["nginx"]),
        entry(f"{prefix}_latency_p99", "ms", p99["router"], baseline, p99["direct"],
              goal=None, met=None, runs=_col(via, "p99_ms"), baseline_runs=_col(direct, "p99_ms"),
              notes=f"p99 on 2 shared cores is noisy: compare within one concurrency. {how}",
              delta=_delta(p99["router"], p99["direct"]), nginx=p99["nginx"]),
        entry(f"{prefix}_cpu_per_request", "µs", cpu_router,
              f"nginx as reverse proxy on the same route, c{conns}", cpu_nginx,
              goal=f"< {GOAL_CPU_US:g} µs" if case == "trivial" else None,
              met=(cpu_router is not None and cpu_router < GOAL_CPU_US) if case == "trivial"
              else None,
              runs=_col(via, "router_cpu_us_per_req"), baseline_runs=_col(ngx, "nginx_cpu_us_per_req"),
              notes="Router process utime+stime over each router wrk run / requests wrk reports "
              "(includes the access decision, metrics and the access log; wrk's connection "
              "set-up too, so a slight over-estimate); baseline: nginx master + workers over the "
              f"nginx runs. Upstream CPU per request: direct "
              f"{median(_col(direct, 'upstream_cpu_us_per_req'))} µs, through the router "
              f"{median(_col(via, 'upstream_cpu_us_per_req'))} µs. {how}"),
    ]  # fmt: skip


def _delta(a: float | None, b: float | None) -> float | None:
    return round(a - b, 3) if a is not None and b is not None else None


# -- the benchmark ---------------------------------------------------------------------------------------
def run(gw: Gateway, ledger: Ledger) -> list[dict[str, Any]]:
    """Both cases; the gateway ``gw`` must have image ``hello:latest`` stored."""
    why_not = ensure_nginx()
    if why_not:
        raise BenchError(why_not)
    scratch = Path(tempfile.mkdtemp(prefix="router-", dir=gw.root))
    secrets = gw.state_dir / "secrets" / "gateway"
    listing = json.dumps([{"name": NAME, "labels": {OWNER_LABEL: USER}}], separators=(",", ":"))
    trivial_port, proxy_trivial, proxy_gateway = free_port(), free_port(), free_port()
    upstream = Nginx(scratch / "nginx-upstream", _TRIVIAL.format(
        host=HOST, port=trivial_port, listing=listing), workers="1")  # fmt: skip
    proxy_body = "  access_log {dir}/access.log combined buffer=64k flush=1s;\n".format(
        dir=scratch / "nginx-proxy"
    ) + "".join(
        _PROXY_SERVER.format(name=name, host=HOST, upstream_port=up, port=port)
        for name, up, port in (("trivial", trivial_port, proxy_trivial),
                               ("gateway", gw.port, proxy_gateway))
    )  # fmt: skip
    proxy = Nginx(scratch / "nginx-proxy", proxy_body, workers="auto")
    routers = [
        Router(scratch / "router-trivial", f"http://{HOST}:{trivial_port}", secrets),
        Router(scratch / "router-gateway", f"http://{HOST}:{gw.port}", secrets),
    ]  # fmt: skip
    status, body = gw.system("POST", "/system/functions", {
        "service": NAME, "image": "hello:latest", "labels": {OWNER_LABEL: USER}})  # fmt: skip
    if not 200 <= status < 300:
        raise BenchError(f"deploy {NAME}: HTTP {status} {body[:300]!r}")
    try:
        gw.wait_ready(NAME)
        upstream.start(trivial_port)
        proxy.start(proxy_trivial)
        for router in routers:
            router.start()
        fn_pid, _ = gw.replica(NAME)
        host = f"{USER}.localhost"

        def unledgered() -> float:
            return upstream.cpu() + proxy.cpu() + sum(cpu_seconds(r.pid) for r in routers)

        setups = {
            "trivial": Setup("trivial", {
                "direct": (trivial_port, f"/function/{NAME}", None),
                "router": (routers[0].port, f"/{FUNCTION}", host),
                "nginx": (proxy_trivial, f"/{FUNCTION}", host),
            }, routers[0], proxy, upstream.cpu, unledgered),
            "function": Setup("function", {
                "direct": (gw.port, f"/function/{NAME}", None),
                "router": (routers[1].port, f"/{FUNCTION}", host),
                "nginx": (proxy_gateway, f"/{FUNCTION}", host),
            }, routers[1], proxy, lambda: cpu_seconds(gw.pid) + cpu_seconds(fn_pid), unledgered),
        }  # fmt: skip
        log(f"router: trivial upstream nginx :{trivial_port}, nginx proxy :{proxy_trivial}/"
            f":{proxy_gateway}, routers :{routers[0].port}/:{routers[1].port}, gateway :{gw.port}")  # fmt: skip
        results: list[dict[str, Any]] = []
        for case, concurrencies in CASES:
            for conns, runs in setups[case].run(concurrencies, ledger).items():
                results += _entries(case, conns, runs)
        return results
    except BenchError:
        for router in routers:
            log(f"router log tail:\n{router.log_tail()}")
        raise
    finally:
        for router in routers:
            router.stop()
        proxy.stop()
        upstream.stop()
        gw.remove(NAME)


def main() -> int:
    """Run this benchmark alone and update its entries in bench/results.json."""
    from bench.__main__ import OUT, summary

    # SIGTERM unwinds through the finally blocks and atexit, stopping every process.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    why_not = harness.ensure_wrk()
    if why_not:
        print(f"cannot run: {why_not}", file=sys.stderr)
        return 1
    root = Path(tempfile.mkdtemp(prefix="ofc-bench-router-"))
    gw = Gateway(root / "gw", root / "venvs")
    try:
        gw.start()
        gw.store_example("hello:latest")
        records = run(gw, Ledger(gw.pid))
    finally:
        gw.stop()
        PROCESSES.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    results = json.loads(OUT.read_text()) if OUT.exists() else {"benchmarks": []}
    names = {r["name"] for r in records}
    kept = [b for b in results.get("benchmarks", []) if b["name"] not in names]
    results["benchmarks"] = kept + records
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, OUT)
    print(summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
