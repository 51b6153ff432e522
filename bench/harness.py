"""What every benchmark shares: processes stopped by PID, the gateway, /proc readers, wrk,
small HTTP helpers and the result records.

Rules kept here so the benchmark modules cannot forget them:

* every process is started through :data:`PROCESSES` and stopped by its PID (SIGTERM,
  then SIGKILL) in a ``finally`` or, at the latest, by ``atexit``;
* every network address is 127.0.0.1;
* every wait is bounded by a deadline (:func:`deadline_loop`), every load loop by a count.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template" / "python3-http"
EXAMPLE = REPO / "examples" / "hello"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WRK = "/usr/bin/wrk"


class BenchError(RuntimeError):
    """A benchmark could not produce its figure; the message says why."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def deadline_loop(timeout: float, interval: float) -> Iterator[float]:
    """Yield the seconds elapsed, sleeping ``interval`` between rounds, until ``timeout``."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            return
        yield elapsed
        time.sleep(interval)


# -- processes ---------------------------------------------------------------------------------
class Processes:
    """Every process the bench starts; each is stopped by its PID, never by name."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        atexit.register(self.stop_all)

    def start(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv), **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
        """SIGTERM by PID, SIGKILL if it has not exited within ``timeout``."""
        try:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        except ProcessLookupError:
            pass
        finally:
            if proc in self._procs and proc.poll() is not None:
                self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self._procs)):
            self.stop(proc)


PROCESSES = Processes()


# -- /proc -------------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as fh:
        data = fh.read()
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads, not its children), in seconds."""
    fields = _stat_fields(pid)  # fields[0] is field 3 (state); utime is 14, stime 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def io_counters(pid: int) -> dict[str, int]:
    """/proc/<pid>/io: rchar, wchar, syscr, syscw, ... (all threads of the process)."""
    out = {}
    with open(f"/proc/{pid}/io") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    return out


def system_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat; diff two samples for a busy fraction."""
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return total - idle, total


class Ledger:
    """Tells how much of the machine's CPU went to processes that are not this bench's.

    Other work on the machine (e.g. a test suite) skews every figure here; each
    benchmark records the share of the machine ("foreign" load) others used while it ran,
    and waits (bounded, from a shared budget) for a quiet machine before each measurement.
    Ours: this process, its reaped children (wrk, bare function starts), the gateway with
    its reaped children, and the gateway's live children (the replicas).
    """

    QUIET = 0.15  # foreign share of the machine below which a measurement may start
    WAIT_BUDGET = 60.0  # seconds all quiet-waits of one bench run may take together

    def __init__(self, gateway_pid: int) -> None:
        self.gateway_pid = gateway_pid
        self.cpus = os.cpu_count() or 1
        self.waited = 0.0

    def _ours(self) -> float:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
        try:
            f = _stat_fields(self.gateway_pid)
            total += sum(int(x) for x in f[11:15]) / CLK_TCK  # utime stime cutime cstime
        except OSError:
            pass
        for pid in child_pids(self.gateway_pid):
            try:
                total += cpu_seconds(pid)
            except OSError:
                pass
        return total

    def sample(self) -> tuple[float, float, float]:
        """(wall, machine busy seconds, our seconds)."""
        busy, _ = system_busy()
        return time.monotonic(), busy / CLK_TCK, self._ours()

    def foreign(self, a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        """Share of the whole machine (0..1) used by other processes between two samples."""
        wall = max(b[0] - a[0], 1e-6)
        return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / (wall * self.cpus))

    def wait_quiet(self, max_wait: float = 10.0) -> float:
        """Wait (bounded by max_wait and the shared budget) for foreign load < QUIET."""
        share = 1.0
        started = time.monotonic()
        while True:
            a = self.sample()
            time.sleep(0.3)
            share = self.foreign(a, self.sample())
            spent = time.monotonic() - started
            if share < self.QUIET or spent >= max_wait or self.waited + spent >= self.WAIT_BUDGET:
                self.waited += spent
                return share


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (scans /proc/*/stat: this kernel has no /proc/*/children)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if int(_stat_fields(int(entry))[1]) == pid:
                out.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def _listening_inodes() -> dict[int, int]:
    """inode -> port of every TCP socket listening on 127.0.0.1 (or any address)."""
    out: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A":  # 0A: LISTEN
                continue
            port = int(cols[1].rsplit(":", 1)[1], 16)
            out[int(cols[9])] = port
    return out


def listening_ports(pid: int) -> list[int]:
    """Ports ``pid`` listens on (socket inodes in /proc/<pid>/fd matched to /proc/net/tcp)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        for fd in os.listdir(fd_dir):
            try:
                link = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        return []
    table = _listening_inodes()
    return sorted({table[i] for i in inodes if i in table})


# -- HTTP ----------------------------------------------------------------------------------------
def http_call(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request on a fresh loopback connection; (status, body). OSError when unreachable."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class KeepAlive:
    """One keep-alive connection (per client thread); reconnects once if the server closed it."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.port = port
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> int:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                resp.read()
                if resp.will_close:
                    self.close()
                return resp.status
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# -- the gateway -----------------------------------------------------------------------------------
@dataclass
class Gateway:
    """A ``python -m runtime`` process on a free loopback port, with a fresh state directory."""

    root: Path  # scratch directory of this bench run
    venv_dir: Path  # shared virtualenv cache (OFC_VENV_DIR)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.state_dir = self.root / "state"
        self.log_path = self.root / "gateway.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OFC_")}
        env.update(
            OFC_STATE_DIR=str(self.state_dir),
            OFC_VENV_DIR=str(self.venv_dir),
            OFC_GATEWAY_HOST=HOST,
            OFC_GATEWAY_PORT=str(self.port),
            **self.env,
        )
        with open(self.log_path, "ab") as out:
            self.proc = PROCESSES.start(
                [sys.executable, "-m", "runtime"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        for _ in deadline_loop(timeout, 0.05):
            if self.proc.poll() is not None:
                raise BenchError(f"gateway exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.2):
                    return
            except OSError:
                continue
        raise BenchError(f"gateway did not listen within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            PROCESSES.stop(self.proc, timeout=20.0)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no gateway log)"

    # -- /system API ------------------------------------------------------------------------------
    @property
    def _auth(self) -> dict[str, str]:
        secrets = self.state_dir / "secrets" / "gateway"
        user = (secrets / "basic-auth-user").read_text().strip()
        password = (secrets / "basic-auth-password").read_text().strip()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def system(
        self, method: str, path: str, payload: object = None, timeout: float = 30.0
    ) -> tuple[int, bytes]:
        headers = dict(self._auth)
        body = None
        if payload is not None:
            body = json.dumps(payload).encode()
            headers["Content-Type"] = "application/json"
        return http_call(self.port, method, path, body, headers, timeout)

    def store_example(self, image: str) -> str:
        """Build examples/hello's context as conftest does and tag it ``image``; returns digest."""
        from runtime.artifacts import ArtifactStore  # the repo root is on sys.path (-m bench)

        ctx = self.root / f"ctx-{time.monotonic_ns()}"
        shutil.copytree(TEMPLATE, ctx)
        shutil.copy(EXAMPLE / "handler.py", ctx / "function" / "handler.py")
        reqs = EXAMPLE / "requirements.txt"
        (ctx / "function" / "requirements.txt").write_text(
            reqs.read_text() if reqs.is_file() else ""
        )
        store = ArtifactStore(self.state_dir / "artifacts")
        digest = store.put(ctx)
        store.tag(image, digest)
        shutil.rmtree(ctx)
        return digest

    def artifact_path(self, image: str) -> Path:
        from runtime.artifacts import ArtifactStore

        return Path(ArtifactStore(self.state_dir / "artifacts").resolve(image).path)

    def deploy(self, name: str, image: str) -> None:
        status, body = self.system("POST", "/system/functions", {"service": name, "image": image})
        if not 200 <= status < 300:
            raise BenchError(f"deploy {name}: HTTP {status} {body[:300]!r}")

    def remove(self, name: str) -> None:
        status, body = self.system("DELETE", "/system/functions", {"functionName": name}, 60.0)
        if status != 200:
            raise BenchError(f"remove {name}: HTTP {status} {body[:300]!r}")

    def status(self, name: str) -> dict[str, Any] | None:
        status, body = self.system("GET", f"/system/function/{name}")
        if status == 404:
            return None
        if status != 200:
            raise BenchError(f"status {name}: HTTP {status} {body[:300]!r}")
        return dict(json.loads(body))

    def wait_ready(self, name: str, timeout: float = 180.0, interval: float = 0.05) -> None:
        last = None
        for _ in deadline_loop(timeout, interval):
            if self.proc is not None and self.proc.poll() is not None:
                raise BenchError(f"gateway exited:\n{self.log_tail()}")
            last = self.status(name)
            if last and last.get("availableReplicas", 0) >= 1:
                return
        raise BenchError(f"{name} not ready after {timeout} s: {last}\n{self.log_tail()}")

    def queue_counts(self) -> dict[str, int]:
        status, body = self.system("GET", "/system/queue")
        if status != 200:
            raise BenchError(f"/system/queue: HTTP {status} {body[:300]!r}")
        return dict(json.loads(body)["counts"])

    def log_records(self, name: str) -> list[dict[str, str]]:
        status, body = self.system("GET", f"/system/logs?name={name}")
        if status != 200:
            raise BenchError(f"/system/logs: HTTP {status} {body[:300]!r}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def replica(self, name: str) -> tuple[int, int]:
        """(pid, port) of the one ready replica of ``name``.

        The port comes from the replica's own start line (``listening on 127.0.0.1:PORT``
        in ``/system/logs``); the PID is the gateway child listening on that port (found
        through /proc). If the log cannot be read, a sole listening child is accepted.
        """
        ports_by_pid = {pid: listening_ports(pid) for pid in child_pids(self.pid)}
        ports_by_pid = {pid: ports for pid, ports in ports_by_pid.items() if ports}
        logged: list[int] = []
        try:
            for record in self.log_records(name):
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", record.get("text", ""))
                if m:
                    logged.append(int(m.group(1)))
        except (BenchError, OSError, ValueError):
            pass
        for port in reversed(logged):  # the newest start line first
            for pid, ports in ports_by_pid.items():
                if port in ports:
                    return pid, port
        if len(ports_by_pid) == 1:
            ((pid, ports),) = ports_by_pid.items()
            if len(ports) == 1:
                return pid, ports[0]
        raise BenchError(
            f"cannot tell {name}'s replica: children {ports_by_pid}, logged ports {logged}"
        )


# -- wrk ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise BenchError(f"cannot read wrk time {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> WrkResult:
    """Read wrk's --latency report."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s*50(?:\.000)?%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s*99(?:\.000)?%\s+(\S+)", out, re.M)
    if not (m and rps and p50 and p99):
        raise BenchError(f"cannot read wrk output:\n{out[-1500:]}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(m.group(1)),
        seconds=_ms(m.group(2) + m.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
    )


def ensure_wrk() -> str | None:
    """None when wrk is usable; else why not (after trying apt-get install -y wrk)."""
    if os.access(WRK, os.X_OK):
        return None
    found = shutil.which("wrk")
    if found:
        globals()["WRK"] = found
        return None
    if shutil.which("apt-get") is None:
        return "wrk is not installed and apt-get is not available"
    log("wrk missing: apt-get install -y wrk")
    for argv in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"],
                 ["apt-get", "install", "-y", "wrk"]):  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)} failed: {exc}"
        if argv[1] == "install" and done.returncode == 0 and shutil.which("wrk"):
            globals()["WRK"] = shutil.which("wrk")
            return None
    return f"wrk could not be installed: {done.stderr.strip()[-300:]}"


def run_wrk(url: str, connections: int, seconds: int, *, host: str | None = None) -> WrkResult:
    """``wrk -t2 -c<N> -d<S>s --latency [-H 'Host: <host>'] URL``, bounded by a timeout."""
    argv = [WRK, "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if host:
        argv += ["-H", f"Host: {host}"]
    argv.append(url)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 20)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 20} s") from None
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return parse_wrk(done.stdout)


# -- results ------------------------------------------------------------------------------------
def _round(x: float | None, digits: int = 4) -> float | None:
    if x is None:
        return None
    return float(f"{x:.{digits}g}") if abs(x) < 1e15 else x


def entry(
    name: str,
    unit: str,
    value: float | None,
    baseline_name: str,
    baseline: float | None,
    *,
    goal: str | None,
    met: bool | None,
    runs: Sequence[Any] = (),
    baseline_runs: Sequence[Any] = (),
    notes: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One record of results.json; ratio = value / baseline."""
    ratio = value / baseline if value is not None and baseline else None
    out: dict[str, Any] = {
        "name": name,
        "unit": unit,
        "value": _round(value, 5),
        "baseline": {
            "name": baseline_name,
            "value": _round(baseline, 5),
            "runs": list(baseline_runs),
        },
        "ratio": _round(ratio, 4),
        "goal": goal,
        "met": met,
        "runs": list(runs),
        "notes": notes,
    }
    out.update(extra)
    return out


def skipped(
    name: str, unit: str, baseline_name: str, goal: str | None, reason: str
) -> dict[str, Any]:
    return entry(name, unit, None, baseline_name, None, goal=goal, met=None,
                 notes=f"SKIPPED: {reason}", skipped=True)  # fmt: skip
