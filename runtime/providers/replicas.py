"""Functions as supervised replicas: the rollout, drain, scale and restart logic of every provider.

What a replica *is* differs per provider (an OS process, a container); what happens to
replicas does not, and lives here once. A :class:`Launcher` supplies the differing
part: how to prepare a version of a function and how to start, stop and observe one
instance of it. :class:`ReplicaProvider` does the rest and implements
:class:`runtime.provider.Provider`.

Lifecycle of one version ("generation") of a function:

1. the launcher prepares it (a virtualenv, an image pulled), with progress written to
   the function's log; its secrets are written to ``run/<function>/<version>/secrets``;
2. its replicas start on free loopback ports and are polled on ``/_/health``;
3. once all are healthy they replace the serving generation's endpoints in one step;
4. the old replicas leave the endpoint list, finish their requests in flight, and
   only then are told to stop (and killed after a grace period).

A new version that fails (bad requirements, an image that cannot be pulled, a crash at
start, no health in time) is abandoned and the serving one stays: nothing half-done
ever takes traffic. A replica that crashes later is taken out of rotation and
restarted with back-off.

Deployments are recorded in ``functions.json`` and restored by :meth:`ReplicaProvider.start`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

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
from sdk.config import parse_duration
from sdk.openfaas import FunctionDeployment, FunctionStatus

__all__ = [
    "Generation",
    "Instance",
    "LaunchError",
    "Launcher",
    "Output",
    "ReplicaProvider",
    "ReplicaProviderConfig",
    "RolloutFailed",
    "exec_timeout",
]

log = logging.getLogger(__name__)

HEALTH_PATH = b"/_/health"
HEALTH_POLL = 0.01
STOP_GRACE = 5.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 30.0  # a replica up this long resets its restart back-off


class RolloutFailed(Exception):
    """A version cannot be prepared; the message goes to the function's log as the reason."""


class LaunchError(Exception):
    """One instance could not be started; the message says why (a crash, as far as the
    supervisor is concerned: a new version fails, a serving replica is retried)."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ReplicaProviderConfig:
    """Settings every replica provider shares (see :class:`runtime.config.RuntimeConfig`)."""

    state_dir: Path
    ready_timeout: float = 120.0
    drain_timeout: float = 30.0


@dataclass(frozen=True)
class Generation:
    """Everything needed to start replicas of one version of a function."""

    number: int
    spec: FunctionDeployment
    run_dir: Path  # run/<function>/<number>/: this version's own files
    secrets_dir: Path  # run_dir/secrets: one file per secret of the deployment
    plan: Any  # what the launcher's prepare() returned for this version
    timeout: float | None = None  # exec_timeout from the deployment's environment


@dataclass(frozen=True)
class Output:
    """Where an instance's output goes."""

    line: Callable[[str], None]  # one line it printed, without the newline
    closed: Callable[[], None]  # its output ended: it is exiting, take it out of rotation


class Instance(Protocol):
    """One started instance of a replica (a process, a container)."""

    async def wait(self) -> int:
        """Its exit status, once it has ended and its output has been read to the end."""
        ...

    async def kill(self) -> None:
        """End it at once (it failed its health check)."""

    async def terminate(self, grace: float) -> None:
        """Ask it to stop, kill it after ``grace`` seconds; returns once it has ended."""

    async def release(self) -> None:
        """Free whatever is left once it has ended (helper processes, the container). Idempotent."""


class Launcher(Protocol):
    """How one kind of provider prepares versions and starts instances.

    ``secret_dir_mode`` and ``secret_file_mode`` are the modes of a generation's
    secret folder and files: what the instance's user needs to read them.
    """

    secret_dir_mode: int
    secret_file_mode: int

    async def start(self) -> None:
        """Get ready before any deployment is restored (and clear what a crash left behind)."""

    async def close(self) -> None:
        """Release what the launcher holds, after every replica has stopped."""

    def validate(self, spec: FunctionDeployment) -> None:
        """Refuse a deployment this launcher cannot run: :class:`InvalidDeployment` (400)."""

    async def prepare(
        self, name: str, spec: FunctionDeployment, progress: Callable[[str, str], None]
    ) -> Any:
        """Make ``spec`` runnable; ``progress(instance, text)`` writes to the function's log.

        Returns the launcher's plan for the version (kept in :attr:`Generation.plan`);
        raises :class:`RolloutFailed` with a reason the user can act on.
        """

    async def launch(self, gen: Generation, replica_id: str, port: int, output: Output) -> Instance:
        """Start one instance of ``gen`` serving HTTP on ``127.0.0.1:port``.

        ``replica_id`` (``<function>-<version>-<index>``) is its ``HOSTNAME``. Raises
        :class:`LaunchError`; must leave nothing behind when it fails or is cancelled.
        """
        ...


class _Replica:
    """One supervised replica: started, health-checked, restarted on crash until stopped."""

    def __init__(
        self, provider: ReplicaProvider, fn: _Function, gen: Generation, index: int
    ) -> None:
        self.provider = provider
        self.fn = fn
        self.gen = gen
        self.id = f"{fn.name}-{gen.number}-{index}"
        self.endpoint: Endpoint | None = None
        self.instance: Instance | None = None
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
        """Start an instance, wait for health, serve until it exits; returns why it ended."""
        port = free_port()
        append = self.provider.logs.append
        output = Output(
            line=lambda text: append(self.fn.name, self.id, text),
            # The output closes as the instance exits, a moment before the exit is
            # reported: leave rotation now, or the next call may get its dead port.
            closed=lambda: self.fn.replica_gone(self),
        )
        try:
            instance = await self.provider.launcher.launch(self.gen, self.id, port, output)
        except LaunchError as exc:
            return str(exc)
        self.instance = instance
        exited = asyncio.create_task(instance.wait())
        healthy = await self._wait_healthy(port, exited)
        if healthy is not None:
            if not exited.done():
                await instance.kill()
            await exited
            await instance.release()
            return healthy
        endpoint = Endpoint("127.0.0.1", port, self.id, self.gen.timeout)
        self.endpoint = endpoint
        if not self.first_ready.done():
            self.first_ready.set_result(None)
        self.fn.replica_ready(self)
        code = await exited
        await instance.release()
        self.fn.replica_gone(self)
        self.provider.on_endpoint_closed(endpoint)
        self.endpoint = None
        return f"exit code {code}"

    async def _wait_healthy(self, port: int, exited: asyncio.Task[int]) -> str | None:
        """``None`` once ``/_/health`` answers 200; else the reason it never did."""
        timeout = self.provider.config.ready_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if exited.done():
                return f"exited with code {exited.result()} before passing its health check"
            if self.stopping:
                return "stopped"
            if await _health_ok(port):
                return None
            await asyncio.sleep(HEALTH_POLL)
        return f"no answer on {HEALTH_PATH.decode()} within {timeout:g} s"

    async def stop(self, drain_timeout: float) -> None:
        """Leave rotation, let requests in flight finish, then end the instance."""
        self.stopping = True
        endpoint = self.endpoint
        self.fn.replica_gone(self)
        if endpoint is not None:
            deadline = time.monotonic() + drain_timeout
            while endpoint.inflight > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self.provider.on_endpoint_closed(endpoint)
        instance = self.instance
        if instance is not None:
            await instance.terminate(STOP_GRACE)
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        # The supervisor may have started another instance before it saw ``stopping``.
        latest = self.instance
        if latest is not None and latest is not instance:
            await latest.terminate(0.0)
            await latest.release()
        if instance is not None:
            await instance.release()


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
        self.serving: Generation | None = None
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


class ReplicaProvider:
    """A :class:`runtime.provider.Provider` running each replica through ``launcher``.

    ``on_endpoint_closed`` is told when a replica's address stops being valid, so the
    gateway can drop pooled connections to it.
    """

    def __init__(
        self,
        config: ReplicaProviderConfig,
        launcher: Launcher,
        *,
        secrets: SecretStore,
        logs: LogStore,
        on_endpoint_closed: Callable[[Endpoint], None] = lambda _: None,
    ) -> None:
        self.config = config
        self.launcher = launcher
        self.secrets = secrets
        self.logs = logs
        self.on_endpoint_closed = on_endpoint_closed
        self._functions: dict[str, _Function] = {}
        self._state_file = config.state_dir / "functions.json"
        self._run_dir = config.state_dir / "run"

    # -- Provider: lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Restore every recorded deployment and start its replicas."""
        self._run_dir.mkdir(parents=True, exist_ok=True)
        await self.launcher.start()
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
        await self.launcher.close()

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
        self.launcher.validate(spec)
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

    def _rollout_failed(self, fn: _Function, message: str) -> None:
        if fn.serving is not None:
            message += "; the previous version keeps serving"
        self.logs.append(fn.name, DEPLOY_LOG_INSTANCE, f"{ROLLOUT_FAILED} {message}")
        log.warning("rollout of %s failed: %s", fn.name, message)

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
            except RolloutFailed as exc:
                self._rollout_failed(fn, str(exc))
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
                    self._rollout_failed(fn, f"new version did not start: {failed[0]}")
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
            # replicas' drain short and leave them running.
            await asyncio.shield(asyncio.gather(*(r.stop(self.config.drain_timeout) for r in old)))
            fn.retiring = [r for r in fn.retiring if r not in old]

    async def _prepare(self, fn: _Function, spec: FunctionDeployment) -> Generation:
        plan = await self.launcher.prepare(
            fn.name, spec, lambda instance, text: self.logs.append(fn.name, instance, text)
        )
        fn.generations += 1
        number = fn.generations
        run_dir = self._run_dir / fn.name / str(number)
        secrets_dir = run_dir / "secrets"
        shutil.rmtree(run_dir, ignore_errors=True)
        # The version's folder is the runtime's alone; what the instance may read is
        # opened up below it, as the launcher says.
        run_dir.mkdir(parents=True, mode=0o700)
        secrets_dir.mkdir(mode=self.launcher.secret_dir_mode)
        os.chmod(secrets_dir, self.launcher.secret_dir_mode)  # whatever the umask
        for secret in spec.secrets:
            try:
                value = self.secrets.read(secret)
            except Exception as exc:  # the secret was deleted after the deploy was accepted
                raise RolloutFailed(f"secret {secret!r}: {exc}") from None
            target = secrets_dir / secret
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
            os.chmod(target, self.launcher.secret_file_mode)
        # Clean up generations of this function that no longer run. Replicas still
        # draining after an update keep theirs: they may read their secret files.
        live = {str(r.gen.number) for r in (*fn.replicas, *fn.retiring)} | {str(number)}
        for old in (self._run_dir / fn.name).glob("*"):
            if old.name not in live:
                shutil.rmtree(old, ignore_errors=True)
        return Generation(number, spec, run_dir, secrets_dir, plan, exec_timeout(spec))

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
