"""The git remote's configuration: one frozen object, read once at start.

Every setting comes from the environment (names below), with defaults that work on one
machine beside ``python -m runtime``: the same state directory, where ``ofc up`` keeps
the platform's secrets and ``ofc user add`` the users. A malformed value stops the
server with a message naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gitserver.users import users_file
from runtime.config import default_state_dir
from sdk.config import ConfigError, env_duration, env_int, env_str

__all__ = ["ConfigError", "GitServerConfig"]


@dataclass(frozen=True)
class GitServerConfig:
    """Settings of ``python -m gitserver``."""

    state_dir: Path
    host: str
    port: int
    gateway_url: str  # push events go to <gateway_url>/function/github-event
    public_url: str | None  # None: http://<host>:<bound port>
    webhook_secret_file: Path  # signs X-Hub-Signature-256, as GitHub does with its copy
    payload_secret_file: Path  # derives the platform's read tokens (sdk.gitremote)
    event_retry_delay: float  # first back-off between delivery attempts; doubled each time
    event_timeout: float  # limit of one delivery attempt

    @property
    def git_dir(self) -> Path:
        """``<state>/git``: the repositories and the users."""
        return self.state_dir / "git"

    @property
    def repos_dir(self) -> Path:
        """Bare repositories at ``<repos_dir>/<owner>/<repo>.git`` (names in lower case)."""
        return self.git_dir / "repos"

    @property
    def users_file(self) -> Path:
        """The users ``ofc user add`` creates (:mod:`gitserver.users`)."""
        return users_file(self.state_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GitServerConfig:
        """Build and validate the configuration from ``env``.

        ``OFC_GIT_HOST`` (``127.0.0.1``) and ``OFC_GIT_PORT`` (``8082``): where it listens.
        ``OFC_STATE_DIR`` (``~/.ofc``): shared with the runtime; repositories go to
        ``<state>/git/repos``, users are read from ``<state>/git/users.json``.
        ``OFC_GATEWAY_URL`` (``http://127.0.0.1:$OFC_GATEWAY_PORT``, port ``8080``): push
        events are POSTed to ``/function/github-event`` there.
        ``OFC_GIT_PUBLIC_URL`` (``http://127.0.0.1:<port>``): how clients and the
        pipeline reach this server; the events' ``clone_url`` and ``html_url`` start with it.
        ``OFC_WEBHOOK_SECRET_FILE`` (``<state>/secrets/functions/github-webhook-secret``)
        and ``OFC_PAYLOAD_SECRET_FILE`` (``<state>/secrets/functions/payload-secret``):
        the platform's secrets, which ``ofc up`` creates; the server does not start
        without them.
        ``OFC_GIT_EVENT_RETRY_DELAY`` (``1s``): wait before the first retry of a failed
        delivery, doubled for each of the three retries.
        ``OFC_GIT_EVENT_TIMEOUT`` (``10s``): limit of one delivery attempt (GitHub's own).
        """
        state_dir = default_state_dir(env)
        secrets = state_dir / "secrets" / "functions"
        gateway = env_str(env, "OFC_GATEWAY_URL", "")
        if not gateway:  # the gateway's own setting, read only when it is needed
            port = env_int(env, "OFC_GATEWAY_PORT", 8080, minimum=1, maximum=65535)
            gateway = f"http://127.0.0.1:{port}"
        public = env_str(env, "OFC_GIT_PUBLIC_URL", "")
        timeout = env_duration(env, "OFC_GIT_EVENT_TIMEOUT", 10.0)
        if timeout <= 0:
            raise ConfigError(
                f"OFC_GIT_EVENT_TIMEOUT={env['OFC_GIT_EVENT_TIMEOUT']!r}: must be above 0"
            )
        return cls(
            state_dir=state_dir,
            host=env_str(env, "OFC_GIT_HOST", "127.0.0.1"),
            port=env_int(env, "OFC_GIT_PORT", 8082, minimum=0, maximum=65535),
            gateway_url=_url("OFC_GATEWAY_URL", gateway),
            public_url=_url("OFC_GIT_PUBLIC_URL", public) if public else None,
            webhook_secret_file=_path(
                env, "OFC_WEBHOOK_SECRET_FILE", secrets / "github-webhook-secret"
            ),
            payload_secret_file=_path(env, "OFC_PAYLOAD_SECRET_FILE", secrets / "payload-secret"),
            event_retry_delay=env_duration(env, "OFC_GIT_EVENT_RETRY_DELAY", 1.0),
            event_timeout=timeout,
        )


def _url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.username or parts.password:
        # The value is not repeated: it holds a password.
        raise ConfigError(f"{name}: a URL with credentials in it is not accepted")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(f"{name}={value!r}: expected an http(s) URL such as http://host:port")
    return value.rstrip("/")


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    return Path(env_str(env, name, str(default))).expanduser()
