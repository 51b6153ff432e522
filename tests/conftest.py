"""Fixtures shared by the tests: a real gateway process on loopback, and deployed functions.

Every process a fixture starts is stopped by its PID in the fixture's teardown.
Virtualenvs are cached per test session (``OFC_VENV_DIR``), so only the first
function with a given set of requirements pays for pip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runtime.artifacts import ArtifactStore
from sdk.gateway import GatewayClient
from sdk.openfaas import FunctionDeployment
from tests.containers import Engine, engine_from_env
from tests.helpers import free_port, start_service, stop_pid  # noqa: F401  (stop_pid: re-exported)

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template" / "python3-http"


@dataclass
class RunningGateway:
    """A ``python -m runtime`` process and a client for it."""

    state_dir: Path
    venv_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None  # type: ignore[type-arg]
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / f"gateway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> tuple[str, str]:
        secrets = self.state_dir / "secrets" / "gateway"
        return (
            (secrets / "basic-auth-user").read_text().strip(),
            (secrets / "basic-auth-password").read_text().strip(),
        )

    @property
    def client(self) -> GatewayClient:
        user, password = self.credentials
        return GatewayClient(self.url, user, password)

    def start(self, timeout: float = 20.0) -> None:
        env = {
            "OFC_STATE_DIR": str(self.state_dir),
            "OFC_VENV_DIR": str(self.venv_dir),
            "OFC_GATEWAY_PORT": str(self.port),
            **self.env,
        }
        self.proc = start_service("runtime", env, self.log_path, f"{self.url}/healthz", timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    # -- functions -------------------------------------------------------------------------------
    def store_function(
        self, image: str, handler: str, requirements: str = "", files: dict[str, str] | None = None
    ) -> str:
        """Build a python3-http context with ``handler`` as handler.py and tag it as ``image``."""
        ctx = (
            self.state_dir.parent
            / f"ctx-{image.replace(':', '-').replace('/', '-')}-{time.monotonic_ns()}"
        )
        shutil.copytree(TEMPLATE, ctx)
        (ctx / "function" / "handler.py").write_text(textwrap.dedent(handler))
        (ctx / "function" / "requirements.txt").write_text(requirements)
        for rel, text in (files or {}).items():
            path = ctx / "function" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        store = ArtifactStore(self.state_dir / "artifacts")
        digest = store.put(ctx)
        store.tag(image, digest)
        shutil.rmtree(ctx)
        return digest

    def deploy(
        self, name: str, handler: str, *, wait: bool = True, update: bool = False, **spec: object
    ) -> None:
        """Store ``handler`` as image ``name:latest`` and deploy it; wait until a replica is ready."""
        self.store_function(f"{name}:latest", handler, str(spec.pop("requirements", "")))
        deployment = FunctionDeployment(service=name, image=f"{name}:latest", **spec)  # type: ignore[arg-type]
        self.client.deploy(deployment)
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str, replicas: int = 1, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.client.get_function(name)
            if status and status.get("availableReplicas", 0) >= replicas:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} not ready after {timeout} s: {status}\n{self.logs()[-2000:]}")


@pytest.fixture(scope="session")
def venv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One virtualenv cache for the whole session."""
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture
def make_gateway(tmp_path: Path, venv_dir: Path) -> Iterator:  # type: ignore[type-arg]
    """Factory: ``make_gateway(**env)`` starts a gateway with extra environment."""
    started: list[RunningGateway] = []

    def make(**env: str) -> RunningGateway:
        state = tmp_path / f"state-{len(started)}"
        state.mkdir()
        gw = RunningGateway(state, venv_dir, free_port(), env)
        gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(make_gateway) -> RunningGateway:  # type: ignore[no-untyped-def]
    """A running gateway with default settings and an empty state directory."""
    return make_gateway()


ECHO_HANDLER = """
import json

def handle(event, context):
    return {
        "statusCode": 200,
        "body": {
            "method": event.method,
            "path": event.path,
            "query": {k: event.query.getlist(k) for k in event.query},
            "headers": {k.lower(): v for k, v in event.headers.items()},
            "body": event.body.decode("latin-1"),
            "hostname": context.hostname,
        },
    }
"""


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A Docker engine and registry on loopback for the session (see tests/containers.py).

    The one named by ``OFC_TEST_DOCKER_HOST`` (``make test`` starts one); else, when this
    machine can run dockerd, one started here in a temporary directory, with the base
    image imported (from the cached rootfs tarball when there is one), and stopped by PID
    at the end of the session; else the container tests skip, saying why.
    """
    found = engine_from_env()
    if found is not None:
        yield found
        return
    from ofc.base_image import ensure_base_image
    from ofc.engine import can_run_engine, start_engine, stop_engine

    reason = can_run_engine()
    if reason is not None:
        pytest.skip(f"no Docker engine: {reason} (or set OFC_TEST_DOCKER_HOST)")
    directory = tmp_path_factory.mktemp("engine")
    info = start_engine(directory, registry_port=free_port(), die_with_parent=True)
    try:
        started = Engine(docker_host=info.docker_host, registry=info.registry)
        ensure_base_image(started.docker_host)
        yield started
    finally:
        report = stop_engine(directory)
        assert not report.leftover, f"engine processes left running: {report.leftover}"
