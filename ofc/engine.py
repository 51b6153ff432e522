"""A private Docker engine and registry on loopback, started and stopped by PID.

``start_engine(dir)`` runs Debian's ``dockerd`` (its own data root, exec root, socket,
pid file and containerd namespaces, no bridge and no iptables changes) and Debian's
``docker-registry`` on ``127.0.0.1:<port>`` with our config (registry/config.yml).
Everything it started is written to ``<dir>/engine.json``, so ``stop_engine(dir)`` in
another process (``ofc engine down``) stops exactly those processes: registry first,
then dockerd (which stops its containers and its containerd), each by PID after
checking that the PID still runs the command line we started. The network state
dockerd may change (links, iptables) is snapshotted before the start and put back
after the stop.

Layout of an engine directory::

    engine.json     the state file (pids, command lines, socket, registry address, and
                    the network snapshot taken before the start)
    docker.sock     the API socket (DOCKER_HOST=unix://<dir>/docker.sock)
    exec/           dockerd's exec root: containerd's sockets and state
    docker.log      dockerd's (and its containerd's) log; docker.pid, daemon.json ({})
    registry.yml    the registry's config, rendered from registry/config.yml
    registry.log    the registry's log
    root/           dockerd's data root: images, containers, build cache (kept by `down`)
    registry/       the registry's storage (kept by `down`)

Unix socket paths are limited to 108 bytes: for a deep ``dir``, ``docker.sock`` and
``exec/`` go to ``/tmp/ofc-engine-<hash of dir>/`` instead (see :func:`engine_paths`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from runtime.config import default_state_dir

__all__ = [
    "EngineError",
    "EngineInfo",
    "EngineStatus",
    "NetworkSnapshot",
    "ProcessRecord",
    "StopReport",
    "can_run_engine",
    "default_engine_dir",
    "engine_paths",
    "engine_status",
    "engine_tree",
    "load_engine",
    "mounts_under",
    "parse_links",
    "ping",
    "plan_network_restore",
    "registry_answers",
    "render_registry_config",
    "start_engine",
    "stop_engine",
    "unmount_under",
]

REPO = Path(__file__).resolve().parent.parent
REGISTRY_TEMPLATE = REPO / "registry" / "config.yml"
DOCKERD = "/usr/sbin/dockerd"
DOCKER_REGISTRY = "/usr/bin/docker-registry"
DOCKER_CLI = "/usr/bin/docker"  # Debian's client: it drives BuildKit in this dockerd
DEFAULT_REGISTRY_PORT = 5000
STATE_FILE = "engine.json"

# Seconds dockerd gives a container to stop on SIGTERM before killing it; the grace
# for dockerd itself must be longer.
CONTAINER_STOP_TIMEOUT = 5
DOCKERD_GRACE = 30.0
REGISTRY_GRACE = 10.0
START_TIMEOUT = 60.0

# sun_path is 108 bytes. The longest socket dockerd and its containerd create under
# the exec root is ``containerd/containerd-debug.sock`` (then ``libnetwork/<id>.sock``).
_SUN_PATH_MAX = 107
_LONGEST_SOCKET = len("/exec/containerd/containerd-debug.sock") + 2

# Links dockerd itself creates; a link with another name that appears while the engine
# runs belongs to someone else on this machine and is left alone.
_DOCKER_LINK = re.compile(r"^(docker\d+|docker_gwbridge|br-[0-9a-f]{12}|veth[0-9a-f]{7})$")


class EngineError(Exception):
    """The engine could not be started, found or stopped; the message says why."""


# -- processes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessRecord:
    """A process we started, as the kernel identifies it: PID plus start time."""

    name: str
    pid: int
    start_time: int  # clock ticks after boot (/proc/<pid>/stat field 22): PIDs get reused
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, name: str, pid: int) -> ProcessRecord | None:
        """Record the running process ``pid``; None when it is gone."""
        stat, cmdline = _proc_stat(pid), _proc_cmdline(pid)
        if stat is None or not cmdline:
            return None
        return cls(name, pid, stat[1], cmdline)

    def owned(self) -> bool:
        """True while ``pid`` is still this process (same command line and start time)."""
        stat = _proc_stat(self.pid)
        return (
            stat is not None
            and stat[0] != "Z"
            and stat[1] == self.start_time
            and _proc_cmdline(self.pid) == self.cmdline
        )

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid})"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:  # gone, or not ours to read
        return b""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of ``pid``, or None when there is no such process."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    fields = raw.rsplit(b")", 1)[1].split()  # the command name may hold spaces and ')'
    return fields[0].decode(), int(fields[19])


def _proc_cmdline(pid: int) -> tuple[str, ...]:
    raw = _read(f"/proc/{pid}/cmdline")
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found.extend(int(p) for p in _read(f"{task}/children").split())
    return found


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


# Children this process started, kept so their exit status is collected (a dropped
# Popen of a running child warns) and their zombies do not look alive.
_SPAWNED: dict[int, subprocess.Popen] = {}  # type: ignore[type-arg]


def _reap(pid: int) -> None:
    proc = _SPAWNED.get(pid)
    if proc is not None and proc.poll() is not None:
        del _SPAWNED[pid]


def _wait_gone(records: Iterable[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    """Wait until none of ``records`` runs; return those still running after ``timeout``."""
    pending = list(records)
    deadline = time.monotonic() + timeout
    while True:
        for record in pending:
            _reap(record.pid)
        pending = [r for r in pending if r.owned()]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(0.05)


def _signal(record: ProcessRecord, sig: signal.Signals) -> bool:
    """Send ``sig`` to ``record`` only if its PID is still the process we started."""
    if not record.owned():
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def _terminate(record: ProcessRecord, grace: float) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds; says what happened."""
    if not _signal(record, signal.SIGTERM):
        _reap(record.pid)
        now, stat = _proc_cmdline(record.pid), _proc_stat(record.pid)
        if now and stat is not None and stat[0] != "Z":
            return f"not signalled: pid {record.pid} now runs {' '.join(now)[:80]!r}"
        return "gone"
    if not _wait_gone([record], grace):
        return "stopped"
    _signal(record, signal.SIGKILL)
    if _wait_gone([record], 10.0):
        return "still running after SIGKILL"
    return f"killed (no exit {grace:g} s after SIGTERM)"


# -- network state --------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetworkSnapshot:
    """What dockerd could change in the host's network: link names and firewall tables."""

    links: tuple[str, ...]
    tables: dict[str, str] = field(default_factory=dict)  # "iptables"/"ip6tables" -> save output

    @classmethod
    def take(cls) -> NetworkSnapshot:
        out = _run_text(["ip", "-o", "link"]) if shutil.which("ip") else ""
        tables = {}
        for tool in ("iptables", "ip6tables"):
            if shutil.which(f"{tool}-save"):
                tables[tool] = _run_text([f"{tool}-save"])
        return cls(parse_links(out), tables)


def parse_links(ip_o_link: str) -> tuple[str, ...]:
    """Link names from ``ip -o link`` output (``veth1@if5`` -> ``veth1``)."""
    names = []
    for line in ip_o_link.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            names.append(parts[1].strip().split("@", 1)[0])
    return tuple(names)


def _rules(save_output: str) -> list[str]:
    # Comments carry timestamps and chain headers carry packet counters: neither is a change.
    return [
        re.sub(r" \[\d+:\d+\]$", "", line)
        for line in save_output.splitlines()
        if line and not line.startswith("#")
    ]


@dataclass(frozen=True)
class NetworkAction:
    """One step that puts the network back as it was, or a note of a change left alone."""

    describe: str
    argv: tuple[str, ...] = ()
    stdin: str = ""


def plan_network_restore(
    before: NetworkSnapshot,
    after: NetworkSnapshot,
    *,
    own_bridges: Collection[str] = (),
    other_dockerd: bool = False,
) -> list[NetworkAction]:
    """What to undo between two snapshots of an engine's life.

    Only dockerd's own changes are undone, and only those of our engine: a bridge
    ``br-<id>`` of one of its networks (``own_bridges``: network ids), and docker0,
    veths or DOCKER firewall chains unless another dockerd runs on this machine
    (``other_dockerd``), which may own them. Everything else is reported, left alone.
    """
    actions = []
    for name in after.links:
        if name in before.links:
            continue
        bridge = name.startswith("br-") and any(i.startswith(name[3:]) for i in own_bridges)
        if bridge or (_DOCKER_LINK.match(name) and not other_dockerd):
            actions.append(NetworkAction(f"deleted link {name}", ("ip", "link", "delete", name)))
        elif _DOCKER_LINK.match(name):
            actions.append(NetworkAction(f"link {name} appeared; another dockerd runs: left alone"))
        else:
            actions.append(NetworkAction(f"link {name} appeared, not dockerd's: left alone"))
    for tool, now in after.tables.items():
        then = before.tables.get(tool, "")
        old, new = _rules(then), _rules(now)
        if old == new:
            continue
        added = [line for line in new if line not in old]
        if not any("DOCKER" in line for line in added):
            actions.append(NetworkAction(f"{tool} changed, not by dockerd: left alone"))
            continue
        if other_dockerd:
            actions.append(NetworkAction(f"{tool} changed; another dockerd runs: left alone"))
            continue
        # iptables-restore replaces only the tables in its input; a table dockerd loaded
        # (nat, usually) is emptied explicitly.
        script = [then.rstrip("\n")] if then.strip() else []
        old_tables = {line[1:] for line in old if line.startswith("*")}
        for table in (line[1:] for line in new if line.startswith("*")):
            if table not in old_tables:
                script.append(_empty_table(new, table))
        actions.append(
            NetworkAction(f"restored {tool} rules", (f"{tool}-restore",), "\n".join(script) + "\n")
        )
    return actions


def _empty_table(rules: list[str], table: str) -> str:
    """An iptables-restore block that leaves ``table`` with only its built-in chains, empty."""
    lines, inside = [f"*{table}"], False
    for line in rules:
        if line.startswith("*"):
            inside = line == f"*{table}"
        elif inside and line.startswith(":") and line.split()[1] != "-":
            lines.append(f"{line.split()[0]} {line.split()[1]}")  # built-in chain, its policy
    lines.append("COMMIT")
    return "\n".join(lines)


def _apply(actions: list[NetworkAction]) -> list[str]:
    done = []
    for action in actions:
        if action.argv:
            proc = subprocess.run(
                action.argv, input=action.stdin, capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                done.append(f"could not do '{action.describe}': {proc.stderr.strip()}")
                continue
        done.append(action.describe)
    return done


# -- mounts ---------------------------------------------------------------------------------------
def mounts_under(paths: Iterable[Path]) -> list[str]:
    """Mount points at or under ``paths``, deepest first."""
    roots = [str(p.resolve()) for p in paths]
    found = []
    for line in _read("/proc/self/mountinfo").decode(errors="replace").splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        if any(point == r or point.startswith(r + "/") for r in roots):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount_under(paths: Iterable[Path]) -> list[str]:
    """Unmount whatever a killed dockerd (or debootstrap) left mounted under ``paths``."""
    done = []
    for point in mounts_under(paths):
        proc = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            proc = subprocess.run(["umount", "-l", point], capture_output=True, text=True)
        done.append(f"unmounted {point}" if proc.returncode == 0 else f"could not unmount {point}")
    return done


# -- state ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineInfo:
    """A started engine, as recorded in ``<dir>/engine.json``."""

    dir: Path
    socket: Path
    registry: str  # "127.0.0.1:<port>"
    exec_root: Path
    namespace: str
    processes: tuple[ProcessRecord, ...]
    network: NetworkSnapshot
    started_at: float

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in self.processes}

    def process(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)

    def env_lines(self) -> list[str]:
        """``KEY=value`` lines for ``eval``/env files: how a client finds this engine."""
        return [f"DOCKER_HOST={self.docker_host}", f"OFC_REGISTRY={self.registry}"]

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("dir", "socket", "exec_root"):
            data[key] = str(data[key])
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EngineInfo:
        data = json.loads(text)
        return cls(
            dir=Path(data["dir"]),
            socket=Path(data["socket"]),
            registry=data["registry"],
            exec_root=Path(data["exec_root"]),
            namespace=data["namespace"],
            processes=tuple(
                ProcessRecord(p["name"], p["pid"], p["start_time"], tuple(p["cmdline"]))
                for p in data["processes"]
            ),
            network=NetworkSnapshot(tuple(data["network"]["links"]), data["network"]["tables"]),
            started_at=data["started_at"],
        )

    def save(self) -> None:
        tmp = self.dir / f".{STATE_FILE}.tmp"
        tmp.write_text(self.to_json())
        tmp.replace(self.dir / STATE_FILE)


def load_engine(dir: Path) -> EngineInfo | None:
    """The engine recorded in ``dir``, or None when nothing was started there."""
    try:
        text = (Path(dir) / STATE_FILE).read_text()
    except FileNotFoundError:
        return None
    try:
        return EngineInfo.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"{Path(dir) / STATE_FILE} is not an engine state file: {exc}") from None


def default_engine_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$OFC_STATE_DIR/engine`` (``~/.ofc/engine``): one engine per machine for `ofc`."""
    return default_state_dir(env) / "engine"


def engine_paths(dir: Path) -> tuple[Path, Path]:
    """(API socket, exec root) for an engine in ``dir``. Unix socket paths are short:
    a deep ``dir`` gets its sockets under /tmp, in a folder named after its path."""
    dir = dir.resolve()
    if len(str(dir)) + _LONGEST_SOCKET <= _SUN_PATH_MAX:
        return dir / "docker.sock", dir / "exec"
    digest = hashlib.sha256(str(dir).encode()).hexdigest()[:12]
    run = Path("/tmp") / f"ofc-engine-{digest}"
    return run / "docker.sock", run / "exec"


def render_registry_config(template: str, addr: str, rootdirectory: Path) -> str:
    """Our registry config with its address and storage filled in; loopback addresses only."""
    host = addr.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "[::1]", "localhost"):
        raise EngineError(f"registry address {addr!r}: only loopback addresses are allowed")
    text = string.Template(template).substitute(addr=addr, rootdirectory=str(rootdirectory))
    config = yaml.safe_load(text)
    if config.get("http", {}).get("addr") != addr:  # a template that lost its ${addr}
        raise EngineError(f"registry config template does not listen on {addr}")
    return text


# -- checks ---------------------------------------------------------------------------------------
def can_run_engine(
    dockerd: str = DOCKERD, registry: str = DOCKER_REGISTRY, docker_cli: str = DOCKER_CLI
) -> str | None:
    """Why this machine cannot run a private engine, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"dockerd runs on Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return f"dockerd needs root (running as uid {os.geteuid()})"
    missing = [
        f"{path} (apt-get install {package})"
        for path, package in (
            (dockerd, "docker.io"),
            (docker_cli, "docker.io"),
            (registry, "docker-registry"),
        )
        if not os.access(path, os.X_OK)
    ]
    for tool, package in (("containerd", "containerd"), ("runc", "runc")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if missing:
        return "missing: " + ", ".join(missing)
    filesystems = _read("/proc/filesystems").decode()
    if "\toverlay\n" not in filesystems:
        return "the kernel has no overlay filesystem (modprobe overlay)"
    if not any(Path("/sys/fs/cgroup").glob("*")):
        return "no cgroup filesystem is mounted on /sys/fs/cgroup"
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ping(socket_path: Path, timeout: float = 2.0) -> bool:
    """True when the Docker API answers ``GET /_ping`` on ``socket_path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            head = sock.recv(32)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.") and head[9:12] == b"200"


def registry_answers(addr: str, timeout: float = 2.0) -> bool:
    """True when the registry at ``addr`` answers ``GET /v2/`` with 200."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        conn.request("GET", "/v2/")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` of a log file, indented for an error message."""
    text = _read(str(path)).decode(errors="replace").splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in text) or "  | (empty)"


# -- start ----------------------------------------------------------------------------------------
def _spawn(argv: list[str], log: Path, env: Mapping[str, str], die_with_parent: bool) -> int:
    def child_setup() -> None:
        if die_with_parent:
            # The test fixture's engine goes when pytest dies, even by SIGKILL; SIGTERM
            # lets dockerd stop its containers and its containerd.
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd="/",
            start_new_session=True,  # Ctrl-C in the shell that ran `ofc engine up` is not for it
            preexec_fn=child_setup if die_with_parent else None,
        )
    _SPAWNED[proc.pid] = proc
    return proc.pid


def _record(name: str, pid: int, argv: list[str], log: Path) -> ProcessRecord:
    # Popen returns while the child may still be inside execve (vfork): its cmdline is
    # ours or empty for a moment. Wait until it shows the program it runs (argv, or the
    # interpreter line of a script).
    ours = _proc_cmdline(os.getpid())
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        record = ProcessRecord.of(name, pid)
        if record is not None and record.cmdline != ours and argv[0] in record.cmdline:
            return record
        _reap(pid)
        if _proc_stat(pid) is None or pid not in _SPAWNED:
            break
        time.sleep(0.005)
    raise EngineError(f"{name} exited at once; end of {log}:\n{log_tail(log)}")


def _wait_for(
    check: Callable[[], bool], record: ProcessRecord, timeout: float, what: str, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not record.owned():
            _reap(record.pid)
            raise EngineError(f"{record.name} exited before {what}; end of {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise EngineError(
                f"{record.name} did not {what} within {timeout:g} s; end of {log}:\n{log_tail(log)}"
            )
        time.sleep(0.05)


def start_engine(
    dir: Path,
    registry_port: int = DEFAULT_REGISTRY_PORT,
    *,
    timeout: float = START_TIMEOUT,
    die_with_parent: bool = False,
    dockerd: str = DOCKERD,
    registry_bin: str = DOCKER_REGISTRY,
) -> EngineInfo:
    """Start dockerd and the registry for ``dir`` and return once both answer.

    ``die_with_parent`` ties both to the calling thread (for a test session). On any
    failure what was started is stopped again and :class:`EngineError` says why, with
    the end of the log that explains it.
    """
    reason = can_run_engine(dockerd, registry_bin)
    if reason:
        raise EngineError(f"cannot run dockerd here: {reason}")
    dir = Path(dir).expanduser().resolve()
    dir.mkdir(parents=True, exist_ok=True)
    previous = load_engine(dir)
    if previous is not None:
        running = [p.describe() for p in previous.processes if p.owned()]
        if running:
            raise EngineError(
                f"an engine is already running in {dir} ({', '.join(running)}); "
                f"stop it with `ofc engine down --dir {dir}`"
            )
        stop_engine(dir)  # a crashed engine: put the network and mounts back first
    sock, exec_root = engine_paths(dir)
    if ping(sock):
        raise EngineError(f"a Docker engine not started by ofc answers on {sock}; use another dir")
    addr = f"127.0.0.1:{registry_port}"
    if not _port_free(registry_port):
        raise EngineError(
            f"{addr} is in use; choose another registry port (--registry-port or OFC_REGISTRY_PORT)"
        )

    sock.parent.mkdir(parents=True, exist_ok=True)
    (dir / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
    config = dir / "registry.yml"
    config.write_text(render_registry_config(REGISTRY_TEMPLATE.read_text(), addr, dir / "registry"))
    # Our own containerd namespaces: even sharing a containerd, engines cannot clash.
    namespace = "ofc-" + hashlib.sha256(str(dir).encode()).hexdigest()[:10]
    network = NetworkSnapshot.take()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    info = EngineInfo(dir, sock, addr, exec_root, namespace, (), network, time.time())
    info.save()  # from here on stop_engine (`ofc engine down`) cleans up, even if we crash

    dockerd_argv = [
        dockerd,
        f"--config-file={dir / 'daemon.json'}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--userland-proxy=false",
        f"--data-root={dir / 'root'}",
        f"--exec-root={exec_root}",
        f"--pidfile={dir / 'docker.pid'}",
        f"--host=unix://{sock}",
        f"--containerd-namespace={namespace}",
        f"--containerd-plugins-namespace={namespace}-plugins",
        f"--shutdown-timeout={CONTAINER_STOP_TIMEOUT}",
    ]
    try:
        pid = _spawn(dockerd_argv, dir / "docker.log", env, die_with_parent)
        record = _record("dockerd", pid, dockerd_argv, dir / "docker.log")
        info = _with(info, record)
        info.save()
        _wait_for(lambda: ping(sock), record, timeout, "answer /_ping", dir / "docker.log")
        for child in _children(pid):  # the containerd it supervises
            child_record = ProcessRecord.of("containerd", child)
            if child_record is not None:
                info = _with(info, child_record)

        registry_argv = [registry_bin, "serve", str(config)]
        pid = _spawn(registry_argv, dir / "registry.log", env, die_with_parent)
        record = _record("registry", pid, registry_argv, dir / "registry.log")
        info = _with(info, record)
        info.save()
        _wait_for(
            lambda: registry_answers(addr), record, timeout, f"answer http://{addr}/v2/",
            dir / "registry.log",
        )  # fmt: skip
    except BaseException:
        stop_engine(dir)
        raise
    return info


def _with(info: EngineInfo, record: ProcessRecord) -> EngineInfo:
    return EngineInfo(
        info.dir, info.socket, info.registry, info.exec_root, info.namespace,
        (*info.processes, record), info.network, info.started_at,
    )  # fmt: skip


# -- stop -----------------------------------------------------------------------------------------
@dataclass
class StopReport:
    """What ``stop_engine`` did; ``leftover`` lists processes it could not stop."""

    stopped: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    leftover: list[str] = field(default_factory=list)
    found: bool = True

    def lines(self) -> list[str]:
        return self.stopped + self.restored + [f"still running: {item}" for item in self.leftover]


def engine_tree(info: EngineInfo) -> list[ProcessRecord]:
    """Every process of the engine now: what we started, containerd's shims (which
    re-parent themselves away from containerd) and all their descendants."""
    roots = [p for p in info.processes if p.owned()]
    containerd_sock = str(info.exec_root / "containerd" / "containerd.sock")
    namespaces = {info.namespace, f"{info.namespace}-plugins"}
    for pid in _all_pids():
        argv = _proc_cmdline(pid)
        if not argv or "containerd-shim" not in os.path.basename(argv[0]):
            continue
        pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
        if pairs.get("-address") == containerd_sock or pairs.get("-namespace") in namespaces:
            record = ProcessRecord.of("containerd-shim", pid)
            if record is not None:
                roots.append(record)
    tree: dict[int, ProcessRecord] = {}
    todo = list(roots)
    while todo:
        record = todo.pop()
        if record.pid in tree:
            continue
        tree[record.pid] = record
        for child in _children(record.pid):
            found = ProcessRecord.of(f"child of {record.name}", child)
            if found is not None:
                todo.append(found)
    return list(tree.values())


def stop_engine(
    dir: Path, *, dockerd_grace: float = DOCKERD_GRACE, registry_grace: float = REGISTRY_GRACE
) -> StopReport:
    """Stop the engine recorded in ``dir`` by PID and put the network state back.

    Registry first, then dockerd (it stops its containers, then its containerd). A PID
    that no longer runs the recorded command line is never signalled. Whatever of the
    engine's process tree is left after that is killed; what could not be is reported
    in ``leftover``.
    """
    dir = Path(dir).expanduser().resolve()
    report = StopReport()
    info = load_engine(dir)
    if info is None:
        report.found = False
        return report
    tree = engine_tree(info)
    own_bridges = _network_ids(info.socket)  # asked before dockerd goes
    for name, grace in (("registry", registry_grace), ("dockerd", dockerd_grace)):
        record = info.process(name)
        if record is None:
            continue
        outcome = _terminate(record, grace)
        if outcome != "gone":
            report.stopped.append(f"{record.describe()} {outcome}")
    stragglers = _wait_gone(tree, 10.0)
    for record in stragglers:
        if _signal(record, signal.SIGKILL):
            report.stopped.append(f"{record.describe()} killed (left behind by dockerd)")
    report.leftover = [r.describe() for r in _wait_gone(tree, 5.0)]

    report.restored += unmount_under([dir, info.exec_root])
    others = _other_dockerd(tree)
    plan = plan_network_restore(
        info.network, NetworkSnapshot.take(), own_bridges=own_bridges, other_dockerd=others
    )
    report.restored += _apply(plan)
    if not report.leftover:
        (dir / STATE_FILE).unlink(missing_ok=True)
        info.socket.unlink(missing_ok=True)
        if info.socket.parent != dir:  # the short /tmp folder for a deep dir's sockets
            shutil.rmtree(info.socket.parent, ignore_errors=True)
    return report


# -- status ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineStatus:
    """Whether the engine recorded in a directory is up."""

    info: EngineInfo
    running: dict[str, bool]  # process name -> still the process we started
    api: bool  # dockerd answers /_ping
    registry: bool  # the registry answers /v2/

    @property
    def healthy(self) -> bool:
        return self.api and self.registry and all(self.running.values())


def engine_status(dir: Path) -> EngineStatus | None:
    """The state of the engine in ``dir``; None when none was started there."""
    info = load_engine(Path(dir).expanduser().resolve())
    if info is None:
        return None
    return EngineStatus(
        info,
        {p.name: p.owned() for p in info.processes},
        ping(info.socket),
        registry_answers(info.registry),
    )


def _api_get(socket_path: Path, path: str, timeout: float = 5.0) -> object:
    """GET ``path`` from the Docker API on ``socket_path``; None when it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or head[9:12] != b"200":
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _network_ids(socket_path: Path) -> list[str]:
    networks = _api_get(socket_path, "/networks")
    return [n["Id"] for n in networks] if isinstance(networks, list) else []


def _other_dockerd(ours: Iterable[ProcessRecord]) -> bool:
    """True when a dockerd that is not ours runs on this machine."""
    mine = {r.pid for r in ours}
    for pid in _all_pids():
        argv = _proc_cmdline(pid)
        if argv and os.path.basename(argv[0]) == "dockerd" and pid not in mine:
            return True
    return False


def _run_text(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""
