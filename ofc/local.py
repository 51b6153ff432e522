"""Where the CLI finds the local runtime: state directory, credentials, gateway URL, processes.

The CLI, ``python -m runtime``, ``python -m builder`` and ``python -m gitserver`` share
one state directory (``OFC_STATE_DIR``, default ``~/.ofc``); the gateway's credentials
are the files the runtime generated there, unless ``OFC_GATEWAY_USER``/
``OFC_GATEWAY_PASSWORD`` say otherwise (a remote gateway). Each process has its pid file
and, when detached, its log there: ``gateway.pid``/``gateway.log``,
``builder.pid``/``builder.log`` and ``gitserver.pid``/``gitserver.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from runtime.config import default_state_dir
from sdk.config import env_int, env_str
from sdk.gateway import GatewayClient

REPO = Path(__file__).resolve().parent.parent


class CliError(Exception):
    """A failure the CLI reports as one line and exit status 1."""


@dataclass(frozen=True)
class Local:
    """The local runtime's coordinates."""

    state_dir: Path
    gateway_url: str
    user: str
    password: str
    builder_url: str = "http://127.0.0.1:8081"
    git_url: str = "http://127.0.0.1:8082"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, state_dir: str | None, gateway: str | None
    ) -> Local:
        state = Path(state_dir).expanduser() if state_dir else default_state_dir(env)
        port = env_int(env, "OFC_GATEWAY_PORT", 8080, minimum=0, maximum=65535)
        builder_port = env_int(env, "OFC_BUILDER_PORT", 8081, minimum=0, maximum=65535)
        git_port = env_int(env, "OFC_GIT_PORT", 8082, minimum=0, maximum=65535)
        url = gateway or env_str(env, "OPENFAAS_URL", f"http://127.0.0.1:{port}")
        user = env_str(env, "OFC_GATEWAY_USER", "")
        password = env_str(env, "OFC_GATEWAY_PASSWORD", "")
        if not user:
            secrets = state / "secrets" / "gateway"
            try:
                user = (secrets / "basic-auth-user").read_text().strip()
                password = (secrets / "basic-auth-password").read_text().strip()
            except FileNotFoundError:
                user, password = "", ""
        return cls(
            state,
            url.rstrip("/"),
            user,
            password,
            f"http://127.0.0.1:{builder_port}",
            f"http://127.0.0.1:{git_port}",
        )

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "gateway.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "gateway.log"

    @property
    def builder_pid_file(self) -> Path:
        return self.state_dir / "builder.pid"

    @property
    def builder_log_file(self) -> Path:
        return self.state_dir / "builder.log"

    @property
    def gitserver_pid_file(self) -> Path:
        return self.state_dir / "gitserver.pid"

    @property
    def gitserver_log_file(self) -> Path:
        return self.state_dir / "gitserver.log"

    def client(self, timeout: float = 30.0) -> GatewayClient:
        if not self.user:
            raise CliError(
                f"no gateway credentials in {self.state_dir / 'secrets' / 'gateway'}: "
                "start the runtime with `ofc up`, or set OFC_GATEWAY_USER and OFC_GATEWAY_PASSWORD"
            )
        return GatewayClient(self.gateway_url, self.user, self.password, timeout=timeout)

    def healthy(self) -> bool:
        return _answers(self.gateway_url + "/healthz")

    def running_pid(self) -> int | None:
        """The PID in the pid file if that process is still our runtime."""
        return _running_pid(self.pid_file, b"runtime")

    def builder_pid(self) -> int | None:
        """The PID in the builder's pid file if that process is still our builder."""
        return _running_pid(self.builder_pid_file, b"builder")

    def gitserver_pid(self) -> int | None:
        """The PID in the git server's pid file if that process is still our git server."""
        return _running_pid(self.gitserver_pid_file, b"gitserver")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _running_pid(pid_file: Path, module: bytes) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # A recycled PID must not be mistaken for ours (and then signalled).
    return pid if module in cmdline else None


def _spawn(
    module: str, env: Mapping[str, str], *, pid_file: Path, log_file: Path, detach: bool
) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``python -m <module>``; detached ones log to ``log_file``."""
    child_env = dict(env)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    if detach:
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=REPO,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    else:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO, env=child_env)
    pid_file.write_text(f"{proc.pid}\n")
    return proc


def spawn_runtime(
    local: Local, env: Mapping[str, str], *, port: int, detach: bool
) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``python -m runtime`` for ``local``; detached ones log to the state directory."""
    local.state_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**env, "OFC_STATE_DIR": str(local.state_dir), "OFC_GATEWAY_PORT": str(port)}
    return _spawn(
        "runtime", child_env, pid_file=local.pid_file, log_file=local.log_file, detach=detach
    )


def spawn_builder(local: Local, env: Mapping[str, str], *, detach: bool) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``python -m builder`` on ``local``'s state directory (same artifacts and venvs)."""
    local.state_dir.mkdir(parents=True, exist_ok=True)
    port = local.builder_url.rsplit(":", 1)[-1]
    child_env = {**env, "OFC_STATE_DIR": str(local.state_dir), "OFC_BUILDER_PORT": port}
    return _spawn(
        "builder",
        child_env,
        pid_file=local.builder_pid_file,
        log_file=local.builder_log_file,
        detach=detach,
    )


def spawn_gitserver(local: Local, env: Mapping[str, str], *, detach: bool) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``python -m gitserver`` on ``local``'s state directory, sending push events
    to ``local``'s gateway. The platform's secrets must exist by then."""
    local.state_dir.mkdir(parents=True, exist_ok=True)
    port = local.git_url.rsplit(":", 1)[-1]
    child_env = {
        **env,
        "OFC_STATE_DIR": str(local.state_dir),
        "OFC_GIT_PORT": port,
        "OFC_GATEWAY_URL": local.gateway_url,
    }
    return _spawn(
        "gitserver",
        child_env,
        pid_file=local.gitserver_pid_file,
        log_file=local.gitserver_log_file,
        detach=detach,
    )


def _wait_answering(
    what: str, url: str, log_file: Path, proc: subprocess.Popen[bytes], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            hint = f"; see {log_file}" if log_file.exists() else ""
            raise CliError(f"the {what} exited with status {proc.returncode} while starting{hint}")
        if _answers(url):
            return
        time.sleep(0.05)
    raise CliError(f"the {what} did not answer on {url} within {timeout:g} s")


def wait_healthy(local: Local, proc: subprocess.Popen, timeout: float = 30.0) -> None:  # type: ignore[type-arg]
    _wait_answering("runtime", local.gateway_url + "/healthz", local.log_file, proc, timeout)


def wait_builder_healthy(local: Local, proc: subprocess.Popen, timeout: float = 30.0) -> None:  # type: ignore[type-arg]
    _wait_answering(
        "builder", local.builder_url + "/healthz", local.builder_log_file, proc, timeout
    )


def wait_gitserver_healthy(local: Local, proc: subprocess.Popen, timeout: float = 30.0) -> None:  # type: ignore[type-arg]
    _wait_answering(
        "git server", local.git_url + "/healthz", local.gitserver_log_file, proc, timeout
    )


def stop_runtime(local: Local, timeout: float = 30.0) -> bool:
    """SIGTERM the runtime by its PID, SIGKILL after ``timeout``; False when none was running."""
    return _stop(local.running_pid(), local.pid_file, timeout)


def stop_builder(local: Local, timeout: float = 30.0) -> bool:
    """SIGTERM the builder by its PID, SIGKILL after ``timeout``; False when none was running."""
    return _stop(local.builder_pid(), local.builder_pid_file, timeout)


def stop_gitserver(local: Local, timeout: float = 30.0) -> bool:
    """SIGTERM the git server by its PID, SIGKILL after ``timeout``; False when none was running."""
    return _stop(local.gitserver_pid(), local.gitserver_pid_file, timeout)


def _stop(pid: int | None, pid_file: Path, timeout: float) -> bool:
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True
