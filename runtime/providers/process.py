"""The process launcher: each replica is an OS process serving the python3-http template.

A deployment's ``image`` names an artifact in the local store (a build context, as
``faas-cli build --shrinkwrap`` lays it out); a version is prepared by getting a
virtualenv built from the template's and the function's ``requirements.txt`` (cached
by their hash, progress in the function's log as instance ``build``), and each
replica runs the context's ``index.py`` with that virtualenv's interpreter.

Rollout, drain, restart and scale are :mod:`runtime.providers.replicas`'; this module
only starts and stops processes. Replicas get ``PR_SET_PDEATHSIG``: even a SIGKILLed
runtime takes them down, and on restart ``functions.json`` brings them back.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runtime.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from runtime.provider import InvalidDeployment
from runtime.providers.replicas import (
    Generation,
    LaunchError,
    Output,
    RolloutFailed,
)
from runtime.venvs import VenvBuildError, VenvCache
from sdk.openfaas import FunctionDeployment

__all__ = ["ProcessLauncher"]

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the runtime is killed (even with
    # SIGKILL) its function processes go too, instead of lingering on their ports.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class _ProcessPlan:
    """How to run one version: the build context, the command and its environment."""

    workdir: Path
    argv: list[str]
    env: dict[str, str]


class _ProcessInstance:
    """One replica process, its output pumped into the function's log."""

    def __init__(self, proc: asyncio.subprocess.Process, output: Output) -> None:
        self.proc = proc
        self.reader = asyncio.create_task(self._pump(output))

    async def _pump(self, output: Output) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line over the stream limit: take what is there
                line = await stdout.read(64 * 1024)
            if not line:
                output.closed()
                return
            output.line(line.decode("utf-8", "replace").rstrip("\n"))

    async def wait(self) -> int:
        code = await self.proc.wait()
        self._kill_group()
        await self.reader
        return code

    async def kill(self) -> None:
        self._signal(signal.SIGKILL)

    async def terminate(self, grace: float) -> None:
        if self.proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), grace)
        except TimeoutError:
            self._signal(signal.SIGKILL)

    async def release(self) -> None:
        if self.proc.returncode is None:
            await self.proc.wait()
        self._kill_group()

    def _signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _kill_group(self) -> None:
        # The replica leads its own session (start_new_session), so helper processes it
        # started are in its process group: end them with it, or they outlive it and
        # hold its output pipe open, which would block the restart.
        if self.proc.returncode is not None and os.path.exists(f"/proc/{self.proc.pid}"):
            # Our leader is gone and reaped, yet a process has its PID: the number was
            # reused, perhaps by another replica leading a group of that number. Not ours.
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class ProcessLauncher:
    """Prepares versions as virtualenvs and runs replicas as child processes."""

    # The replica runs as the runtime's own user: nobody else needs to read its secrets.
    secret_dir_mode = 0o700
    secret_file_mode = 0o400

    def __init__(self, state_dir: Path, *, artifacts: ArtifactStore, venvs: VenvCache) -> None:
        self.artifacts = artifacts
        self.venvs = venvs
        self._pycache = state_dir / "cache" / "pycache"

    async def start(self) -> None:
        self._pycache.mkdir(parents=True, exist_ok=True)

    async def close(self) -> None:
        pass

    def validate(self, spec: FunctionDeployment) -> None:
        try:
            self.artifacts.resolve(spec.image)
        except (ArtifactNotFound, ArtifactError) as exc:
            raise InvalidDeployment(str(exc)) from None

    async def prepare(
        self, name: str, spec: FunctionDeployment, progress: Callable[[str, str], None]
    ) -> _ProcessPlan:
        try:
            artifact = self.artifacts.resolve(spec.image)
        except (ArtifactNotFound, ArtifactError) as exc:
            raise RolloutFailed(str(exc)) from None
        requirements = [
            p.read_text()
            for p in (
                artifact.path / "requirements.txt",
                artifact.path / "function" / "requirements.txt",
            )
            if p.is_file()
        ]
        build_log = lambda line: progress("build", line)  # noqa: E731
        if self.venvs.lookup(requirements) is None:
            build_log("[ofc] installing requirements into a new virtualenv")
        try:
            venv = await self.venvs.ensure(requirements, build_log)
        except VenvBuildError as exc:
            raise RolloutFailed(f"installing requirements failed: {exc}") from None
        argv = shlex.split(spec.env_process or "python index.py")
        if argv and argv[0] in ("python", "python3"):
            argv[0] = str(venv.python)
        env = {
            "PATH": f"{venv.path / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPYCACHEPREFIX": str(self._pycache),
            **spec.env_vars,
            # Set by the platform, not overridable by the deployment:
            "fprocess": spec.env_process or "python index.py",
            "bind_address": "127.0.0.1",
        }
        return _ProcessPlan(artifact.path, argv, env)

    async def launch(
        self, gen: Generation, replica_id: str, port: int, output: Output
    ) -> _ProcessInstance:
        plan: _ProcessPlan = gen.plan
        env = {
            "HOME": str(gen.run_dir),  # the deployment may set its own
            **plan.env,
            # Set by the platform, not overridable by the deployment:
            "secret_mount_path": str(gen.secrets_dir),
            "port": str(port),
            "HOSTNAME": replica_id,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *plan.argv,
                cwd=plan.workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                start_new_session=True,  # Ctrl-C on `ofc up` reaches the runtime, which stops us in order
            )
        except OSError as exc:
            raise LaunchError(f"cannot start {plan.argv[0]!r}: {exc.strerror or exc}") from None
        return _ProcessInstance(proc, output)
