"""Fixtures of the git remote's tests: a real ``python -m gitserver`` on a free port, with
a :class:`~tests.helpers.Recorder` standing in for the gateway, and working clones driven
by the real ``git`` with a clean environment (no system, user or credential configuration).

Every server is stopped by its PID in the fixture's teardown.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitserver.cgi import git_env
from gitserver.users import UserStore, users_file
from sdk.gitremote import READ_USER, read_token
from tests.conftest import stop_pid
from tests.helpers import Received, Recorder, free_port, start_service, wait_until

AUTHOR = {
    "GIT_AUTHOR_NAME": "Alice Example",
    "GIT_AUTHOR_EMAIL": "alice@example.com",
    "GIT_COMMITTER_NAME": "Alice Example",
    "GIT_COMMITTER_EMAIL": "alice@example.com",
}


@dataclass
class GitRemote:
    """A running ``python -m gitserver`` and what a test needs to talk to it."""

    state_dir: Path
    port: int
    proc: subprocess.Popen  # type: ignore[type-arg]
    log_path: Path
    recorder: Recorder
    webhook_secret: str
    payload_secret: str
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_user(self, name: str) -> str:
        """Create user ``name`` (as ``ofc user add`` does) and return the token."""
        _, token = UserStore(users_file(self.state_dir)).add(name)
        self.tokens[name] = token
        return token

    def repo_url(self, owner: str, repo: str, user: str | None = None, token: str = "") -> str:
        """``http://[user:token@]127.0.0.1:<port>/git/<owner>/<repo>.git``."""
        auth = f"{user}:{token}@" if user else ""
        return f"http://{auth}127.0.0.1:{self.port}/git/{owner}/{repo}.git"

    def read_url(self, owner: str, repo: str) -> str:
        """The URL the pipeline clones with: user x-access-token and the read token."""
        return self.repo_url(owner, repo, READ_USER, read_token(self.payload_secret, owner, repo))

    def events(self, full_name: str) -> list[Received]:
        """Push events received for ``full_name`` (``owner/repo`` as the owner spells it)."""
        return [
            r for r in list(self.recorder.received)
            if json.loads(r.body)["repository"]["full_name"] == full_name
        ]  # fmt: skip

    def wait_events(self, full_name: str, count: int, timeout: float = 10) -> list[Received]:
        wait_until(
            lambda: len(self.events(full_name)) >= count,
            timeout,
            lambda: f"{len(self.events(full_name))} events for {full_name}, want {count}; "
            f"log:\n{self.log()[-3000:]}",
        )
        return self.events(full_name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_git_remote(
    state_dir: Path, gateway_url: str, recorder: Recorder, **env: str
) -> GitRemote:
    """Write the platform's secrets into ``state_dir`` (as ``ofc up`` does), start the
    server and wait for ``/healthz``."""
    functions = state_dir / "secrets" / "functions"
    functions.mkdir(parents=True, exist_ok=True)
    webhook, payload = secrets.token_hex(32), secrets.token_hex(32)
    (functions / "github-webhook-secret").write_text(webhook + "\n")
    (functions / "payload-secret").write_text(payload + "\n")
    port = free_port()
    log_path = state_dir.parent / f"gitserver-{port}.log"
    env = {
        "OFC_STATE_DIR": str(state_dir),
        "OFC_GIT_PORT": str(port),
        "OFC_GATEWAY_URL": gateway_url,
        **env,
    }
    proc = start_service("gitserver", env, log_path, f"http://127.0.0.1:{port}/healthz")
    return GitRemote(state_dir, port, proc, log_path, recorder, webhook, payload)


def _require_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH: the git remote runs git's own http-backend")


def accepted(_: Received) -> tuple[int, bytes]:
    """github-event's answer to a push it queued."""
    return 202, b"accepted"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitRemote]:
    """One server for a test module (tests use their own users and repositories)."""
    _require_git()
    with Recorder(accepted) as recorder:
        state = tmp_path_factory.mktemp("gitserver") / "state"
        server = start_git_remote(state, recorder.url, recorder)
        yield server
        stop_pid(server.proc)


@pytest.fixture
def make_remote(tmp_path: Path) -> Iterator[Callable[..., GitRemote]]:
    """Factory: ``make_remote(reply=..., delay=..., **env)`` starts a server with its own
    recorder; every one is stopped by its PID."""
    _require_git()
    started: list[tuple[GitRemote, Recorder]] = []

    def make(
        reply: Callable[[Received], tuple[int, bytes]] = accepted, delay: float = 0.0, **env: str
    ) -> GitRemote:
        recorder = Recorder(reply, delay=delay).__enter__()
        state = tmp_path / f"state-{len(started)}"
        try:
            server = start_git_remote(state, recorder.url, recorder, **env)
        except BaseException:
            recorder.__exit__(None, None, None)
            raise
        started.append((server, recorder))
        return server

    yield make
    for server, recorder in started:
        stop_pid(server.proc)
        recorder.__exit__(None, None, None)


class Work:
    """A working repository, with git run as a user runs it, minus any configuration."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.home = path.parent / f"{path.name}-home"
        self.home.mkdir(parents=True, exist_ok=True)
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args],
            cwd=self.path,
            env=git_env(self.home, **AUTHOR),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def git(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, f"git {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout.strip()

    def commit(self, files: dict[str, str | bytes | None], message: str = "change") -> str:
        """Write ``files`` (``None`` deletes one), commit them all, return the sha."""
        for name, content in files.items():
            path = self.path / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def push(self, url: str, *refspecs: str) -> subprocess.CompletedProcess[str]:
        return self.run("push", url, *(refspecs or ("main",)))


@pytest.fixture
def work(tmp_path: Path) -> Work:
    """An empty working repository on branch ``main``."""
    _require_git()
    return Work(tmp_path / "work")


def clone(url: str, dest: Path) -> subprocess.CompletedProcess[str]:
    """``git clone`` with a clean environment."""
    home = dest.parent / f"{dest.name}-home"
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["git", "clone", "-q", url, str(dest)],
        env=git_env(home),
        capture_output=True,
        text=True,
        timeout=60,
    )
