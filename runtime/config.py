"""The embedded runtime's configuration: one frozen object, read once at start.

Every setting comes from the environment (names below), with defaults that work on
one machine. A malformed value stops the runtime with a message naming the variable.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sdk.config import ConfigError, env_duration, env_int, env_str

__all__ = ["RuntimeConfig", "ConfigError", "DOCKER_PULL_POLICIES", "default_state_dir"]

PROVIDERS = ("process", "docker", "hybrid")
# When the Docker provider pulls: auto (image absent, or tag latest/absent), always, never.
DOCKER_PULL_POLICIES = ("auto", "always", "never")


def default_state_dir(env: Mapping[str, str]) -> Path:
    """``$OFC_STATE_DIR``, else ``~/.ofc``."""
    return Path(env_str(env, "OFC_STATE_DIR", str(Path.home() / ".ofc"))).expanduser()


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings of the gateway, its queue and the function provider."""

    state_dir: Path
    venv_dir: Path
    host: str
    port: int
    queue_workers: int
    replica_concurrency: int
    async_timeout: float
    upstream_timeout: float
    max_body_bytes: int
    async_max_attempts: int
    async_retry_window: float
    ready_timeout: float
    drain_timeout: float
    provider: str
    python: str
    pip_args: tuple[str, ...]
    docker_socket: str = ""  # the engine's unix socket (provider "docker" only)
    docker_pull: str = "auto"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RuntimeConfig:
        """Build and validate the configuration from ``env``.

        ``OFC_STATE_DIR`` (``~/.ofc``): deployments, queue, logs, secrets, virtualenvs.
        ``OFC_VENV_DIR`` (``<state>/venvs``): virtualenv cache; may be shared by runtimes.
        ``OFC_GATEWAY_HOST`` (``127.0.0.1``) and ``OFC_GATEWAY_PORT`` (``8080``).
        ``OFC_REPLICA_CONCURRENCY`` (``16``): calls in flight per replica; more wait in the gateway.
        ``OFC_QUEUE_WORKERS`` (``4``): async calls run at once.
        ``OFC_ASYNC_TIMEOUT`` (``15m``): limit of one async call; builds run inside them.
        ``OFC_UPSTREAM_TIMEOUT`` (``60s``): limit of a synchronous call to a function.
        ``OFC_MAX_BODY_BYTES`` (``104857600``): largest async request body kept in the queue.
        ``OFC_ASYNC_MAX_ATTEMPTS`` (``6``): tries to reach a function before parking a call.
        ``OFC_ASYNC_RETRY_WINDOW`` (``2m``): no call is parked before it has waited this long.
        ``OFC_READY_TIMEOUT`` (``120s``): how long a new replica may take to pass its health check.
        ``OFC_DRAIN_TIMEOUT`` (``30s``): how long a replica being replaced may finish requests.
        ``OFC_PROVIDER`` (``process``): which provider runs functions: ``process`` (each
        replica an OS process, images from the local artifact store) or ``docker`` (each
        replica a container of a registry image, on a Docker engine on this machine) or
        ``hybrid`` (images in the local artifact store as processes, any other image as a
        container: the platform's own functions stay processes, users' are containers).
        ``OFC_DOCKER_HOST`` (``unix://<state>/engine/docker.sock`` when that socket exists,
        else ``unix:///var/run/docker.sock``): the engine, for ``docker`` and ``hybrid``; must
        exist at start.
        ``OFC_DOCKER_PULL`` (``auto``): when ``docker`` pulls an image: ``auto`` when it is
        absent or its tag is ``latest`` or absent, ``always``, or ``never`` (local images only).
        ``OFC_PYTHON``: interpreter function virtualenvs are made from (default: this one's base).
        ``OFC_PIP_ARGS``: extra arguments for pip when building function virtualenvs.
        """
        provider = env_str(env, "OFC_PROVIDER", "process")
        if provider not in PROVIDERS:
            raise ConfigError(
                f"OFC_PROVIDER={provider!r}: expected 'process', 'docker' or 'hybrid'"
            )
        python = env_str(env, "OFC_PYTHON", getattr(sys, "_base_executable", sys.executable))
        state_dir = default_state_dir(env)
        docker_pull = env_str(env, "OFC_DOCKER_PULL", "auto")
        if docker_pull not in DOCKER_PULL_POLICIES:
            raise ConfigError(
                f"OFC_DOCKER_PULL={docker_pull!r}: expected 'auto', 'always' or 'never'"
            )
        docker_socket = _docker_socket(env, state_dir) if provider != "process" else ""
        return cls(
            state_dir=state_dir,
            venv_dir=Path(env_str(env, "OFC_VENV_DIR", str(state_dir / "venvs"))).expanduser(),
            host=env_str(env, "OFC_GATEWAY_HOST", "127.0.0.1"),
            port=env_int(env, "OFC_GATEWAY_PORT", 8080, minimum=0, maximum=65535),
            queue_workers=env_int(env, "OFC_QUEUE_WORKERS", 4, minimum=1, maximum=256),
            replica_concurrency=env_int(
                env, "OFC_REPLICA_CONCURRENCY", 16, minimum=1, maximum=10000
            ),
            async_timeout=env_duration(env, "OFC_ASYNC_TIMEOUT", 15 * 60.0),
            upstream_timeout=env_duration(env, "OFC_UPSTREAM_TIMEOUT", 60.0),
            max_body_bytes=env_int(env, "OFC_MAX_BODY_BYTES", 100 * 1024 * 1024, minimum=1),
            async_max_attempts=env_int(env, "OFC_ASYNC_MAX_ATTEMPTS", 6, minimum=1),
            async_retry_window=env_duration(env, "OFC_ASYNC_RETRY_WINDOW", 120.0),
            ready_timeout=env_duration(env, "OFC_READY_TIMEOUT", 120.0),
            drain_timeout=env_duration(env, "OFC_DRAIN_TIMEOUT", 30.0),
            provider=provider,
            python=python,
            pip_args=tuple(env_str(env, "OFC_PIP_ARGS", "").split()),
            docker_socket=docker_socket,
            docker_pull=docker_pull,
        )


def _docker_socket(env: Mapping[str, str], state_dir: Path) -> str:
    """The socket path of ``OFC_DOCKER_HOST`` (or its default), which must be a socket now."""
    ours = state_dir / "engine" / "docker.sock"
    default = f"unix://{ours}" if _is_socket(ours) else "unix:///var/run/docker.sock"
    host = env_str(env, "OFC_DOCKER_HOST", default)
    scheme, sep, path = host.partition("://")
    if not sep or scheme != "unix" or not path.startswith("/"):
        raise ConfigError(
            f"OFC_DOCKER_HOST={host!r}: expected unix:///path/to/docker.sock "
            "(the engine's unix socket on this machine)"
        )
    if not _is_socket(Path(path)):
        raise ConfigError(
            f"OFC_DOCKER_HOST={host!r}: no socket at {path}: start the Docker engine "
            "or point OFC_DOCKER_HOST at its socket (OFC_PROVIDER=docker needs one)"
        )
    return path


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False
