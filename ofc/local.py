"""Where the CLI finds the local platform: state directory, credentials, services, processes.

``ofc up`` runs five services as ``python -m <module>`` processes sharing one state
directory (``OFC_STATE_DIR``, default ``~/.ofc``): the gateway (``runtime``), the
``builder``, the built-in git remote (``gitserver``), ``edge-auth`` (``auth``) and the
``edge-router`` (``router``), the only ingress users need. Each has its port setting
(:data:`SERVICES`), a pid file and, when detached, a log in the state directory:
``gateway.pid``/``gateway.log``, ``builder.pid``/``builder.log`` and so on.

The gateway's credentials are the files the runtime generated in the state directory,
unless ``OFC_GATEWAY_USER``/``OFC_GATEWAY_PASSWORD`` say otherwise (a remote gateway).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from runtime.config import default_state_dir
from sdk.config import env_int, env_str
from sdk.gateway import GatewayClient

REPO = Path(__file__).resolve().parent.parent


class CliError(Exception):
    """A failure the CLI reports as one line and exit status 1."""


@dataclass(frozen=True)
class Service:
    """One of the platform's processes on this machine."""

    name: str  # pid and log file stem: gateway.pid, builder.log
    module: str  # python -m <module>
    title: str  # how messages name it
    port_env: str
    default_port: int

    def url(self, env: Mapping[str, str]) -> str:
        port = env_int(env, self.port_env, self.default_port, minimum=0, maximum=65535)
        return f"http://127.0.0.1:{port}"


GATEWAY = Service("gateway", "runtime", "runtime", "OFC_GATEWAY_PORT", 8080)
BUILDER = Service("builder", "builder", "builder", "OFC_BUILDER_PORT", 8081)
GITSERVER = Service("gitserver", "gitserver", "git server", "OFC_GIT_PORT", 8082)
AUTH = Service("auth", "auth", "edge-auth", "OFC_AUTH_PORT", 8083)
ROUTER = Service("router", "router", "edge-router", "OFC_ROUTER_PORT", 8000)
# In start order; `ofc down` stops them in reverse.
SERVICES = (GATEWAY, BUILDER, GITSERVER, AUTH, ROUTER)


@dataclass(frozen=True)
class Local:
    """The local platform's coordinates."""

    state_dir: Path
    gateway_url: str
    user: str
    password: str
    urls: Mapping[str, str] = field(default_factory=dict)  # service name -> loopback URL

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], *, state_dir: str | None, gateway: str | None
    ) -> Local:
        state = Path(state_dir).expanduser() if state_dir else default_state_dir(env)
        urls = {s.name: s.url(env) for s in SERVICES}
        url = gateway or env_str(env, "OPENFAAS_URL", urls[GATEWAY.name])
        user = env_str(env, "OFC_GATEWAY_USER", "")
        password = env_str(env, "OFC_GATEWAY_PASSWORD", "")
        if not user:
            secrets = state / "secrets" / "gateway"
            try:
                user = (secrets / "basic-auth-user").read_text().strip()
                password = (secrets / "basic-auth-password").read_text().strip()
            except FileNotFoundError:
                user, password = "", ""
        return cls(state, url.rstrip("/"), user, password, urls)

    @property
    def builder_url(self) -> str:
        return self.urls[BUILDER.name]

    @property
    def git_url(self) -> str:
        return self.urls[GITSERVER.name]

    @property
    def router_url(self) -> str:
        return self.urls[ROUTER.name]

    def url(self, service: Service) -> str:
        return self.gateway_url if service is GATEWAY else self.urls[service.name]

    def pid_file(self, service: Service) -> Path:
        return self.state_dir / f"{service.name}.pid"

    def log_file(self, service: Service) -> Path:
        return self.state_dir / f"{service.name}.log"

    def pid(self, service: Service) -> int | None:
        """The PID in ``service``'s pid file if that process is still that service."""
        return _running_pid(self.pid_file(service), service.module.encode())

    def client(self, timeout: float = 30.0) -> GatewayClient:
        if not self.user:
            raise CliError(
                f"no gateway credentials in {self.state_dir / 'secrets' / 'gateway'}: "
                "start the runtime with `ofc up`, or set OFC_GATEWAY_USER and OFC_GATEWAY_PASSWORD"
            )
        return GatewayClient(self.gateway_url, self.user, self.password, timeout=timeout)

    def healthy(self) -> bool:
        return _answers(self.gateway_url + "/healthz")


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


def spawn(
    local: Local, service: Service, env: Mapping[str, str], *, detach: bool
) -> subprocess.Popen:  # type: ignore[type-arg]
    """Start ``python -m <module>`` on ``local``'s state directory and ``service``'s port.

    Detached ones log to the state directory and leave the terminal's session.
    """
    local.state_dir.mkdir(parents=True, exist_ok=True)
    port = local.url(service).rsplit(":", 1)[-1].split("/")[0]
    child_env = {**env, "OFC_STATE_DIR": str(local.state_dir), service.port_env: port}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", service.module]
    if detach:
        with open(local.log_file(service), "ab") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    else:
        proc = subprocess.Popen(argv, cwd=REPO, env=child_env)
    local.pid_file(service).write_text(f"{proc.pid}\n")
    return proc


def wait_answering(
    local: Local, service: Service, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> None:
    """Until ``service`` answers ``/healthz``; :class:`CliError` if it exits or never does."""
    url = local.url(service) + "/healthz"
    log_file = local.log_file(service)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            hint = f"; see {log_file}" if log_file.exists() else ""
            raise CliError(
                f"the {service.title} exited with status {proc.returncode} while starting{hint}"
            )
        if _answers(url):
            return
        time.sleep(0.05)
    raise CliError(f"the {service.title} did not answer on {url} within {timeout:g} s")


def stop(local: Local, service: Service, timeout: float = 30.0) -> bool:
    """SIGTERM ``service`` by its PID, SIGKILL after ``timeout``; False when it was not running."""
    pid, pid_file = local.pid(service), local.pid_file(service)
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


def service_env(local: Local, env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus where each service finds the others on loopback (an operator's values win).

    The public port of the edge (the router's) names the session token's issuer and the
    URLs users see, so edge-auth and the router must agree on it.
    """
    router_port = local.router_url.rsplit(":", 1)[-1]
    defaults = {
        "OFC_GATEWAY_URL": local.gateway_url,
        "OFC_BUILDER_URL": local.builder_url,
        "OFC_GIT_URL": local.git_url,
        "OFC_AUTH_URL": local.urls[AUTH.name],
        "OFC_PUBLIC_PORT": router_port,
    }
    return {**env, **{key: env.get(key) or value for key, value in defaults.items()}}
