"""The process provider: each replica is an OS process serving the python3-http template.

A deployment's ``image`` names an artifact in the local store (a build context, as
``faas-cli build --shrinkwrap`` lays it out); the provider runs its ``index.py`` with
the interpreter of a virtualenv built from the template's and the function's
``requirements.txt``, cached by their hash.

Lifecycle of one version ("generation") of a function:

1. virtualenv ready (cached, or built with progress written to the function's log);
2. its replicas start on free loopback ports and are polled on ``/_/health``;
3. once all are healthy they replace the serving generation's endpoints in one step;
4. the old replicas leave the endpoint list, finish their requests in flight, and
   only then get SIGTERM (SIGKILL after a grace period).

A new version that fails (bad requirements, crash at start, no health in time) is
abandoned and the serving one stays: nothing half-done ever takes traffic. A replica
that crashes later is taken out of rotation and restarted with back-off.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runtime.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from runtime.logs import LogStore
from runtime.provider import (
    DEPLOY_LOG_INSTANCE,
    ROLLOUT_FAILED,
    ROLLOUT_READY,
    Endpoint,
    FunctionExists,
    FunctionNotFound,
    InvalidDeployment,
)
from runtime.secrets import SecretStore
from runtime.venvs import VenvBuildError, VenvCache
from sdk.config import parse_duration
from sdk.openfaas import FunctionDeployment, FunctionStatus

log = logging.getLogger(__name__)

HEALTH_PATH = b"/_/health"
HEALTH_POLL = 0.01
STOP_GRACE = 5.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0  # a replica up this long resets its restart back-off

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the runtime is killed (even with
    # SIGKILL) its function processes go too, instead of lingering on their ports.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ProcessProviderConfig:
    state_dir: Path
    ready_timeout: float = 120.0
    drain_timeout: float = 30.0


@dataclass(frozen=True)
class _Generation:
    """Everything needed to start replicas of one version of a function."""

    number: int
    spec: FunctionDeployment
    workdir: Path
    argv: list[str]
    env: dict[str, str]
    timeout: float | None = None  # exec_timeout from the deployment's environment


class _Replica:
    """One supervised process: started, health-checked, restarted on crash until stopped."""

    def __init__(
        self, provider: ProcessProvider, fn: _Function, gen: _Generation, index: int
    ) -> None:
        self.provider = provider
        self.fn = fn
        self.gen = gen
        self.id = f"{fn.name}-{gen.number}-{index}"
        self.endpoint: Endpoint | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.first_ready: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self.stopping:
            started = time.monotonic()
            error = await self._run_once()
            if self.stopping:
                return
            if not self.first_ready.done():
                # A replica of a new version that never became healthy fails the rollout.
                self.first_ready.set_result(error or "exited before it was ready")
                return
            if time.monotonic() - started > STABLE_AFTER:
                backoff = 0.5
            self.provider.logs.append(
                self.fn.name,
                self.id,
                f"[ofc] replica stopped ({error}); restarting in {backoff:g} s",
            )
            log.warning("replica %s stopped (%s); restarting in %g s", self.id, error, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run_once(self) -> str:
        """Start the process, wait for health, serve until it exits; returns why it ended."""
        port = _free_port()
        env = dict(self.gen.env, port=str(port), HOSTNAME=self.id)
        self.proc = proc = await asyncio.create_subprocess_exec(
            *self.gen.argv,
            cwd=self.gen.workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C on `ofc up` reaches the runtime, which stops us in order
        )
        reader = asyncio.create_task(self._pump_logs(proc))
        exited = asyncio.create_task(proc.wait())
        healthy = await self._wait_healthy(port, exited)
        if healthy is not None:
            if not exited.done():
                self._kill()
            await exited
            self._kill_group()
            await reader
            return healthy
        endpoint = Endpoint("127.0.0.1", port, self.id, self.gen.timeout)
        self.endpoint = endpoint
        if not self.first_ready.done():
            self.first_ready.set_result(None)
        self.fn.replica_ready(self)
        code = await exited
        self._kill_group()
        await reader
        self.fn.replica_gone(self)
        self.provider.on_endpoint_closed(endpoint)
        self.endpoint = None
        return f"exit code {code}"

    async def _wait_healthy(self, port: int, exited: asyncio.Task[int]) -> str | None:
        """``None`` once ``/_/health`` answers 200; else the reason it never did."""
        deadline = time.monotonic() + self.provider.config.ready_timeout
        while time.monotonic() < deadline:
            if exited.done():
                return f"exited with code {exited.result()} before passing its health check"
            if self.stopping:
                return "stopped"
            if await _health_ok(port):
                return None
            await asyncio.sleep(HEALTH_POLL)
        return (
            f"no answer on {HEALTH_PATH.decode()} within {self.provider.config.ready_timeout:g} s"
        )

    async def _pump_logs(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        append = self.provider.logs.append
        while True:
            try:
                line = await proc.stdout.readline()
            except ValueError:  # a line over the stream limit: take what is there
                line = await proc.stdout.read(64 * 1024)
            if not line:
                # The output closes as the process exits, a moment before the exit is
                # reported: leave rotation now, or the next call may get its dead port.
                self.fn.replica_gone(self)
                return
            append(self.fn.name, self.id, line.decode("utf-8", "replace").rstrip("\n"))

    def _kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _kill_group(self) -> None:
        # The replica leads its own session (start_new_session), so helper processes it
        # started are in its process group: end them with it, or they outlive it and
        # hold its output pipe open, which would block the restart.
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def stop(self, drain_timeout: float) -> None:
        """Leave rotation, let requests in flight finish, then end the process."""
        self.stopping = True
        endpoint = self.endpoint
        self.fn.replica_gone(self)
        if endpoint is not None:
            deadline = time.monotonic() + drain_timeout
            while endpoint.inflight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self.provider.on_endpoint_closed(endpoint)
        proc = self.proc
        if proc is not None and proc.returncode is None:
            self._kill(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                self._kill(signal.SIGKILL)
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        if proc is not None and proc.returncode is None:
            await proc.wait()
        self._kill_group()


async def _health_ok(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(
            b"GET " + HEALTH_PATH + b" HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
        )
        line = await asyncio.wait_for(reader.readline(), 2.0)
        return line.split(b" ", 2)[1:2] == [b"200"]
    except (TimeoutError, OSError, IndexError):
        return False
    finally:
        writer.close()


class _Function:
    """A deployed function: its desired state, serving generation and ready endpoints."""

    def __init__(self, name: str, spec: FunctionDeployment, replicas: int, created_at: str) -> None:
        self.name = name
        self.spec = spec  # the newest requested version (may not be serving yet)
        self.desired = replicas
        self.created_at = created_at
        self.serving: _Generation | None = None
        self.replicas: list[_Replica] = []
        # Replaced by a newer version and still draining; removal and shutdown stop them too.
        self.retiring: list[_Replica] = []
        # Replaced, never mutated: the gateway may be indexing the old list.
        self.endpoints: list[Endpoint] = []
        self.lock = asyncio.Lock()
        self.generations = 0
        self.task: asyncio.Task[None] | None = None
        self.removed = False

    def replica_ready(self, replica: _Replica) -> None:
        if (
            replica.gen is self.serving
            and replica in self.replicas
            and replica.endpoint is not None
        ):
            if replica.endpoint not in self.endpoints:
                self.endpoints = [*self.endpoints, replica.endpoint]

    def replica_gone(self, replica: _Replica) -> None:
        if replica.endpoint is not None and replica.endpoint in self.endpoints:
            self.endpoints = [e for e in self.endpoints if e is not replica.endpoint]


class ProcessProvider:
    """Runs functions as local processes; see the module docstring."""

    def __init__(
        self,
        config: ProcessProviderConfig,
        *,
        artifacts: ArtifactStore,
        venvs: VenvCache,
        secrets: SecretStore,
        logs: LogStore,
        on_endpoint_closed: Callable[[Endpoint], None] = lambda _: None,
    ) -> None:
        self.config = config
        self.artifacts = artifacts
        self.venvs = venvs
        self.secrets = secrets
        self.logs = logs
        self.on_endpoint_closed = on_endpoint_closed
        self._functions: dict[str, _Function] = {}
        self._state_file = config.state_dir / "functions.json"
        self._run_dir = config.state_dir / "run"
        self._pycache = config.state_dir / "cache" / "pycache"

    # -- Provider: lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore every recorded deployment and start its replicas."""
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._pycache.mkdir(parents=True, exist_ok=True)
        if not self._state_file.exists():
            return
        records = json.loads(self._state_file.read_text())
        for name, record in records.items():
            spec = FunctionDeployment.from_json(record["deployment"])
            fn = _Function(name, spec, int(record.get("replicas", 1)), record.get("createdAt", ""))
            self._functions[name] = fn
            self._schedule(fn, spec)
        log.info("restored %d deployed functions", len(records))

    async def close(self) -> None:
        """Stop every replica (used on shutdown; deployments stay recorded)."""
        functions = list(self._functions.values())
        for fn in functions:
            if fn.task is not None:
                fn.task.cancel()
        await asyncio.gather(*(fn.task for fn in functions if fn.task), return_exceptions=True)
        await asyncio.gather(
            *(r.stop(0.0) for fn in functions for r in [*fn.replicas, *fn.retiring]),
            return_exceptions=True,
        )

    # -- Provider: API ------------------------------------------------------------------------------
    async def deploy(self, spec: FunctionDeployment) -> None:
        if spec.service in self._functions:
            raise FunctionExists(f"function {spec.service!r} already exists: update it with PUT")
        self._validate(spec)
        fn = _Function(spec.service, spec, _initial_replicas(spec), _now_rfc3339())
        self._functions[spec.service] = fn
        self._save()
        self._schedule(fn, spec)

    async def update(self, spec: FunctionDeployment) -> None:
        fn = self._get(spec.service)
        self._validate(spec)
        fn.spec = spec
        self._save()
        self._schedule(fn, spec)

    async def remove(self, name: str) -> None:
        fn = self._get(name)
        fn.removed = True
        del self._functions[name]
        self._save()
        if fn.task is not None:
            fn.task.cancel()
        async with fn.lock:
            replicas, fn.replicas, fn.endpoints = [*fn.replicas, *fn.retiring], [], []
            await asyncio.gather(*(r.stop(self.config.drain_timeout) for r in replicas))
        shutil.rmtree(self._run_dir / name, ignore_errors=True)
        self.logs.remove(name)
        log.info("removed function %s", name)

    async def scale(self, name: str, replicas: int) -> None:
        fn = self._get(name)
        fn.desired = replicas
        self._save()
        asyncio.create_task(self._apply_scale(fn))

    def list(self) -> list[FunctionStatus]:
        return [self._status(fn) for fn in self._functions.values()]

    def get(self, name: str) -> FunctionStatus:
        return self._status(self._get(name))

    def endpoints(self, name: str) -> list[Endpoint] | None:
        fn = self._functions.get(name)
        return None if fn is None else fn.endpoints

    async def log_lines(
        self, name: str, *, tail: int, since: float | None, follow: bool
    ) -> AsyncIterator[dict[str, str]]:
        self._get(name)
        if follow:
            async for record in self.logs.follow(name, tail=tail or None, since=since):
                yield record.to_json()
        else:
            # Reading a long log file takes a while: keep it off the event loop.
            records = await asyncio.to_thread(self.logs.read, name, tail=tail or None, since=since)
            for record in records:
                yield record.to_json()

    # -- internals ----------------------------------------------------------------------------------
    def _get(self, name: str) -> _Function:
        fn = self._functions.get(name)
        if fn is None:
            raise FunctionNotFound(f"function {name!r} not found")
        return fn

    def _status(self, fn: _Function) -> FunctionStatus:
        # The version that takes traffic, as a Kubernetes Deployment's status would show
        # it: a caller waiting for a new commit to be live watches its labels here.
        serving = fn.serving.spec if fn.serving is not None else fn.spec
        return FunctionStatus(
            deployment=serving,
            replicas=fn.desired,
            available_replicas=len(fn.endpoints),
            created_at=fn.created_at,
        )

    def _validate(self, spec: FunctionDeployment) -> None:
        try:
            self.artifacts.resolve(spec.image)
        except (ArtifactNotFound, ArtifactError) as exc:
            raise InvalidDeployment(str(exc)) from None
        for secret in spec.secrets:
            if not self.secrets.exists(secret):
                raise InvalidDeployment(
                    f"secret {secret!r} not found: create it first (ofc secret create {secret} ...)"
                )

    def _save(self) -> None:
        records = {
            name: {
                "deployment": fn.spec.to_json(),
                "replicas": fn.desired,
                "createdAt": fn.created_at,
            }
            for name, fn in self._functions.items()
        }
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        os.replace(tmp, self._state_file)

    def _schedule(self, fn: _Function, spec: FunctionDeployment) -> None:
        previous = fn.task
        fn.task = asyncio.create_task(self._rollout(fn, spec, previous))

    async def _rollout(
        self, fn: _Function, spec: FunctionDeployment, previous: asyncio.Task[None] | None
    ) -> None:
        # A newer request supersedes an older rollout that has not finished.
        if previous is not None and not previous.done():
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
        async with fn.lock:
            try:
                gen = await self._prepare(fn, spec)
            except _RolloutFailed as exc:
                message = str(exc)
                if fn.serving is not None:
                    message += "; the previous version keeps serving"
                self.logs.append(fn.name, DEPLOY_LOG_INSTANCE, f"{ROLLOUT_FAILED} {message}")
                log.warning("deploy of %s failed: %s", fn.name, message)
                return
            new = [_Replica(self, fn, gen, i) for i in range(fn.desired)]
            try:
                errors = await asyncio.gather(*(r.first_ready for r in new)) if new else []
            except asyncio.CancelledError:
                # Superseded, removed or shutting down: these replicas never joined
                # fn.replicas, so nothing else would ever stop them.
                await asyncio.shield(asyncio.gather(*(r.stop(0.0) for r in new)))
                raise
            failed = [e for e in errors if e]
            if failed or fn.removed:
                await asyncio.gather(*(r.stop(0.0) for r in new))
                if failed:
                    message = f"new version did not start: {failed[0]}"
                    if fn.serving is not None:
                        message += "; the previous version keeps serving"
                    self.logs.append(fn.name, DEPLOY_LOG_INSTANCE, f"{ROLLOUT_FAILED} {message}")
                    log.warning("rollout of %s failed: %s", fn.name, message)
                return
            old = fn.replicas
            fn.serving, fn.replicas = gen, new
            fn.retiring = [*(r for r in fn.retiring if not r.task.done()), *old]
            fn.endpoints = [r.endpoint for r in new if r.endpoint is not None]
            self.logs.append(
                fn.name,
                DEPLOY_LOG_INSTANCE,
                f"{ROLLOUT_READY} version {gen.number} serving with {len(new)} replica(s)",
            )
            log.info(
                "function %s version %d serving with %d replica(s)", fn.name, gen.number, len(new)
            )
            # Shielded: a newer rollout cancelling this task must not cut the old
            # replicas' drain short and leave their processes running.
            await asyncio.shield(asyncio.gather(*(r.stop(self.config.drain_timeout) for r in old)))
            fn.retiring = [r for r in fn.retiring if r not in old]

    async def _prepare(self, fn: _Function, spec: FunctionDeployment) -> _Generation:
        try:
            artifact = self.artifacts.resolve(spec.image)
        except (ArtifactNotFound, ArtifactError) as exc:
            raise _RolloutFailed(str(exc)) from None
        requirements = [
            p.read_text()
            for p in (
                artifact.path / "requirements.txt",
                artifact.path / "function" / "requirements.txt",
            )
            if p.is_file()
        ]
        progress = lambda line: self.logs.append(fn.name, "build", line)  # noqa: E731
        if self.venvs.lookup(requirements) is None:
            progress("[ofc] installing requirements into a new virtualenv")
        try:
            venv = await self.venvs.ensure(requirements, progress)
        except VenvBuildError as exc:
            raise _RolloutFailed(f"installing requirements failed: {exc}") from None
        fn.generations += 1
        number = fn.generations
        run_dir = self._run_dir / fn.name / str(number)
        secrets_dir = run_dir / "secrets"
        shutil.rmtree(run_dir, ignore_errors=True)
        secrets_dir.mkdir(parents=True, mode=0o700)
        for secret in spec.secrets:
            try:
                value = self.secrets.read(secret)
            except Exception as exc:  # the secret was deleted after the deploy was accepted
                raise _RolloutFailed(f"secret {secret!r}: {exc}") from None
            target = secrets_dir / secret
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
        argv = shlex.split(spec.env_process or "python index.py")
        if argv and argv[0] in ("python", "python3"):
            argv[0] = str(venv.python)
        env = {
            "PATH": f"{venv.path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(run_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPYCACHEPREFIX": str(self._pycache),
            **spec.env_vars,
            # Set by the platform, not overridable by the deployment:
            "fprocess": spec.env_process or "python index.py",
            "bind_address": "127.0.0.1",
            "secret_mount_path": str(secrets_dir),
        }
        # Clean up generations of this function that no longer run. Replicas still
        # draining after an update keep theirs: they may read their secret files.
        live = {str(r.gen.number) for r in (*fn.replicas, *fn.retiring)} | {str(number)}
        for old in (self._run_dir / fn.name).glob("*"):
            if old.name not in live:
                shutil.rmtree(old, ignore_errors=True)
        return _Generation(number, spec, artifact.path, argv, env, exec_timeout(spec))

    async def _apply_scale(self, fn: _Function) -> None:
        async with fn.lock:
            gen = fn.serving
            if gen is None or fn.removed:
                return  # the pending rollout starts the desired count
            extra = fn.replicas[fn.desired :]
            if extra:
                fn.replicas = fn.replicas[: fn.desired]
                await asyncio.gather(*(r.stop(self.config.drain_timeout) for r in extra))
            used = {r.id for r in fn.replicas}
            index = 0
            while len(fn.replicas) < fn.desired:
                while f"{fn.name}-{gen.number}-{index}" in used:
                    index += 1
                replica = _Replica(self, fn, gen, index)
                used.add(replica.id)
                fn.replicas = [*fn.replicas, replica]


class _RolloutFailed(Exception):
    pass


def exec_timeout(spec: FunctionDeployment) -> float | None:
    """The function's ``exec_timeout`` (of-watchdog's name: ``30s``, ``15m``, or seconds), if valid."""
    raw = spec.env_vars.get("exec_timeout", "")
    try:
        return parse_duration(raw) or None if raw else None
    except ValueError:
        return None


def _initial_replicas(spec: FunctionDeployment) -> int:
    """``com.openfaas.scale.min`` when set (at least 1), else 1."""
    try:
        return max(1, int(spec.labels.get("com.openfaas.scale.min", "1")))
    except ValueError:
        return 1
