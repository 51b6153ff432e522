"""The builder's configuration: one frozen object, read once at start.

Every setting comes from the environment (names below), with defaults that work on one
machine beside ``python -m runtime``: the same state directory, so what the builder
stores is what the gateway deploys. A malformed value stops the builder with a message
naming the variable.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.backends import BACKENDS
from runtime.config import default_state_dir
from sdk.config import ConfigError, env_duration, env_int, env_str

__all__ = ["BuilderConfig", "BuildkitSettings", "ConfigError"]

MIB = 1024 * 1024
DEBIAN_DOCKER_CLI = "/usr/bin/docker"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_BASE_IMAGE = "ofc/python3-base:bookworm"
_DOCKER_HOST_SCHEMES = ("unix://", "tcp://", "ssh://", "fd://")
# Variables the docker and buildctl clients may need from the builder's own environment
# (where to find registry credentials and TLS material); nothing else is passed on.
_CLIENT_ENV = ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")


@dataclass(frozen=True)
class BuildkitSettings:
    """Settings of the ``buildkit`` backend (``builder/backends/buildkit.py``)."""

    docker_cli: str  # the docker client that drives BuildKit in the engine
    docker_host: str  # DOCKER_HOST for it, e.g. "unix:///var/run/docker.sock"
    buildkit_addr: str  # a buildkitd address: build with buildctl instead; "" for the engine
    buildctl: str  # the buildctl client, used only with buildkit_addr
    base_image: str  # BASE_IMAGE build arg when the request gives none
    ca_bundle: Path | None  # CA certificates the build trusts (pip behind a TLS proxy)
    extra_ca: Path | None  # more CA certificates (PEM), appended to ca_bundle
    client_env: Mapping[str, str] = field(default_factory=dict)  # passed on to the clients

    @classmethod
    def from_env(cls, env: Mapping[str, str], state_dir: Path) -> BuildkitSettings:
        """Read the ``buildkit`` backend's settings (see :meth:`BuilderConfig.from_env`)."""
        return cls(
            docker_cli=env_str(env, "OFC_DOCKER_CLI", _default_docker_cli()),
            docker_host=_docker_host(env, state_dir),
            buildkit_addr=env_str(env, "OFC_BUILDKIT_ADDR", ""),
            buildctl=env_str(env, "OFC_BUILDCTL", "buildctl"),
            base_image=env_str(env, "OFC_BUILDER_BASE_IMAGE", DEFAULT_BASE_IMAGE),
            ca_bundle=_ca_bundle(env),
            extra_ca=_optional_file(env, "OFC_BUILDER_EXTRA_CA"),
            client_env={k: env[k] for k in _CLIENT_ENV if env.get(k)},
        )


@dataclass(frozen=True)
class BuilderConfig:
    """Settings of ``python -m builder``."""

    state_dir: Path
    venv_dir: Path
    host: str
    port: int
    backend: str
    max_bytes: int  # largest request body, and largest unpacked context
    concurrency: int  # builds at once; one more is answered 429
    build_timeout: float  # seconds one build may take, tests included
    payload_secret_file: Path
    python: str
    pip_args: tuple[str, ...]
    buildkit: BuildkitSettings | None = None  # set when backend is "buildkit"

    @property
    def artifacts_dir(self) -> Path:
        """The artifact store the gateway resolves images from (``runtime.gateway.app``)."""
        return self.state_dir / "artifacts"

    @property
    def work_dir(self) -> Path:
        """Uploaded tars and unpacked contexts while they are built; emptied at start."""
        return self.state_dir / "builder" / "work"

    @property
    def buildkit_dir(self) -> Path:
        """The ``buildkit`` backend's own files (the CA bundle it passes to builds)."""
        return self.state_dir / "builder" / "buildkit"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BuilderConfig:
        """Build and validate the configuration from ``env``.

        ``OFC_BUILDER_HOST`` (``127.0.0.1``) and ``OFC_BUILDER_PORT`` (``8081``).
        ``OFC_BUILDER_BACKEND`` (``local``): how contexts are built (``local``: into the
        artifact store and venv cache of the process runtime; ``buildkit``: the context's
        Dockerfile with BuildKit, the image pushed to its registry).
        ``OFC_STATE_DIR`` (``~/.ofc``): shared with the runtime.
        ``OFC_VENV_DIR`` (``<state>/venvs``): virtualenv cache, shared with the runtime.
        ``OFC_BUILDER_MAX_BYTES`` (``104857600``): largest tar accepted, and largest
        total size of the files in it.
        ``OFC_BUILDER_CONCURRENCY`` (``2``): builds at once; another one gets 429.
        ``OFC_BUILDER_TIMEOUT`` (``10m``): limit of one build, requirements and tests included.
        ``OFC_PAYLOAD_SECRET_FILE`` (``<state>/secrets/functions/payload-secret``): the
        HMAC key of ``X-Build-Signature``; generated at start when the file is absent.
        ``OFC_PYTHON``: interpreter function virtualenvs are made from; part of the venv
        cache key, so it must match the runtime's (both default to this one's base).
        ``OFC_PIP_ARGS``: extra arguments for pip when building function virtualenvs.

        The ``buildkit`` backend's, read only when it is chosen:
        ``OFC_DOCKER_CLI`` (``/usr/bin/docker`` when present, else ``docker`` on PATH): a
        client that builds with BuildKit itself (Debian's 20.10 does; newer ones need
        the buildx plugin); checked at start.
        ``OFC_DOCKER_HOST`` (``unix://$OFC_STATE_DIR/engine/docker.sock`` when that socket
        exists, as ``ofc engine`` makes it, else ``unix:///var/run/docker.sock``).
        ``OFC_BUILDKIT_ADDR`` (unset): a buildkitd address such as
        ``unix:///run/buildkit/buildkitd.sock``; builds then go through ``OFC_BUILDCTL``
        (``buildctl`` on PATH) instead of the engine, and may target several platforms.
        ``OFC_BUILDER_BASE_IMAGE`` (``ofc/python3-base:bookworm``): the ``BASE_IMAGE``
        build arg when a request gives none.
        ``OFC_BUILDER_CA_BUNDLE`` (``/etc/ssl/certs/ca-certificates.crt`` when present):
        CA certificates builds trust, passed as the BuildKit secret ``ca-certificates``.
        ``OFC_BUILDER_EXTRA_CA`` (unset): a PEM file of more CA certificates, for
        networks that intercept TLS; added to the bundle.
        """
        backend = env_str(env, "OFC_BUILDER_BACKEND", "local")
        if backend not in BACKENDS:
            raise ConfigError(
                f"OFC_BUILDER_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}"
            )
        state_dir = default_state_dir(env)
        buildkit = BuildkitSettings.from_env(env, state_dir) if backend == "buildkit" else None
        secret_default = state_dir / "secrets" / "functions" / "payload-secret"
        return cls(
            state_dir=state_dir,
            venv_dir=Path(env_str(env, "OFC_VENV_DIR", str(state_dir / "venvs"))).expanduser(),
            host=env_str(env, "OFC_BUILDER_HOST", "127.0.0.1"),
            port=env_int(env, "OFC_BUILDER_PORT", 8081, minimum=0, maximum=65535),
            backend=backend,
            max_bytes=env_int(env, "OFC_BUILDER_MAX_BYTES", 100 * MIB, minimum=1024),
            concurrency=env_int(env, "OFC_BUILDER_CONCURRENCY", 2, minimum=1, maximum=256),
            build_timeout=_positive(env_duration(env, "OFC_BUILDER_TIMEOUT", 600.0), env),
            payload_secret_file=Path(
                env_str(env, "OFC_PAYLOAD_SECRET_FILE", str(secret_default))
            ).expanduser(),
            python=env_str(env, "OFC_PYTHON", getattr(sys, "_base_executable", sys.executable)),
            pip_args=tuple(env_str(env, "OFC_PIP_ARGS", "").split()),
            buildkit=buildkit,
        )


def _positive(seconds: float, env: Mapping[str, str]) -> float:
    if seconds <= 0:
        raise ConfigError(f"OFC_BUILDER_TIMEOUT={env['OFC_BUILDER_TIMEOUT']!r}: must be above 0")
    return seconds


def _default_docker_cli() -> str:
    # Debian's client first: /usr/local/bin/docker may be a newer one without buildx.
    if os.access(DEBIAN_DOCKER_CLI, os.X_OK):
        return DEBIAN_DOCKER_CLI
    return shutil.which("docker") or "docker"


def _docker_host(env: Mapping[str, str], state_dir: Path) -> str:
    engine_socket = state_dir / "engine" / "docker.sock"  # where `ofc engine up` puts it
    default = (
        f"unix://{engine_socket}" if _is_socket(engine_socket) else "unix:///var/run/docker.sock"
    )
    host = env_str(env, "OFC_DOCKER_HOST", default)
    if not host.startswith(_DOCKER_HOST_SCHEMES):
        raise ConfigError(
            f"OFC_DOCKER_HOST={host!r}: expected an address such as "
            "unix:///var/run/docker.sock or tcp://127.0.0.1:2375"
        )
    return host


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def _ca_bundle(env: Mapping[str, str]) -> Path | None:
    if "OFC_BUILDER_CA_BUNDLE" in env:
        return _optional_file(env, "OFC_BUILDER_CA_BUNDLE")  # set but empty: no bundle
    return Path(SYSTEM_CA_BUNDLE) if Path(SYSTEM_CA_BUNDLE).is_file() else None


def _optional_file(env: Mapping[str, str], name: str) -> Path | None:
    value = env_str(env, name, "")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={value!r}: no such file")
    return path
