"""The builder's configuration: one frozen object, read once at start.

Every setting comes from the environment (names below), with defaults that work on one
machine beside ``python -m runtime``: the same state directory, so what the builder
stores is what the gateway deploys. A malformed value stops the builder with a message
naming the variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.backends import BACKENDS
from runtime.config import default_state_dir
from sdk.config import ConfigError, env_duration, env_int, env_str

__all__ = ["BuilderConfig", "ConfigError"]

MIB = 1024 * 1024


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

    @property
    def artifacts_dir(self) -> Path:
        """The artifact store the gateway resolves images from (``runtime.gateway.app``)."""
        return self.state_dir / "artifacts"

    @property
    def work_dir(self) -> Path:
        """Uploaded tars and unpacked contexts while they are built; emptied at start."""
        return self.state_dir / "builder" / "work"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BuilderConfig:
        """Build and validate the configuration from ``env``.

        ``OFC_BUILDER_HOST`` (``127.0.0.1``) and ``OFC_BUILDER_PORT`` (``8081``).
        ``OFC_BUILDER_BACKEND`` (``local``): how contexts are built (``local``: into the
        artifact store and venv cache of the process runtime).
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
        """
        backend = env_str(env, "OFC_BUILDER_BACKEND", "local")
        if backend not in BACKENDS:
            raise ConfigError(
                f"OFC_BUILDER_BACKEND={backend!r}: expected one of {', '.join(BACKENDS)}"
            )
        state_dir = default_state_dir(env)
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
        )


def _positive(seconds: float, env: Mapping[str, str]) -> float:
    if seconds <= 0:
        raise ConfigError(f"OFC_BUILDER_TIMEOUT={env['OFC_BUILDER_TIMEOUT']!r}: must be above 0")
    return seconds
