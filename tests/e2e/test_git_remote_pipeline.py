"""git push to the platform's own remote, end to end: the same pipeline a GitHub push takes.

``ofc up`` starts the gateway, the builder, the built-in git remote (pushed to through
the edge-router, as users do) and the platform's functions; users are made with
``ofc user add`` and push with plain ``git`` (token through ``GIT_ASKPASS``, never on a
command line). No GitHub and no fake of it: a push to the built-in remote reaches
github-event as a signed GitHub-shaped event.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ofc.gitclient import git, git_env
from tests.helpers import Cli, free_port, wait_until

pytestmark = pytest.mark.slow

HELLO = 'def handle(event, context):\n    return {"statusCode": 200, "body": {"hi": "%s"}}\n'
LIVE_TIMEOUT = 120.0


def stack_yml(*functions: str) -> str:
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    for name in functions:
        lines += [
            f"  {name}:",
            "    lang: python3-http",
            f"    handler: ./{name}",
            f"    image: {name}:latest",
        ]
    return "\n".join(lines) + "\n"


class Remote:
    """The running platform and a way to push to it as any user."""

    def __init__(self, cli: Cli, home: Path) -> None:
        self.cli = cli
        self.home = home
        self.tokens: dict[str, str] = {}

    @property
    def git_url(self) -> str:
        return f"http://127.0.0.1:{self.cli.env['OFC_ROUTER_PORT']}/git"  # through the edge-router

    def user(self, name: str) -> str:
        if name not in self.tokens:
            out = self.cli.ok("user", "add", name).stdout
            self.tokens[name] = out.strip().splitlines()[-1]
        return self.tokens[name]

    def repo(self, user: str, name: str, files: dict[str, str]) -> Path:
        """A new local repository with ``files`` committed, pushing as ``user``."""
        work = self.home / f"{user}-{name}"
        work.mkdir()
        self.write(work, files)
        env = self.env(user)
        git(work, env, "init", "-q", "-b", "main")
        git(work, env, "add", "-A")
        git(work, env, "commit", "-q", "-m", "first")
        return work

    def env(self, user: str) -> dict[str, str]:
        home = self.home / f"home-{user}"
        home.mkdir(exist_ok=True)
        return git_env(home, user, self.user(user))

    @staticmethod
    def write(work: Path, files: dict[str, str | None]) -> None:
        for rel, text in files.items():
            path = work / rel
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def commit(self, user: str, work: Path, files: dict[str, str | None]) -> None:
        self.write(work, files)
        env = self.env(user)
        git(work, env, "add", "-A")
        git(work, env, "commit", "-q", "-m", "change")

    def push(self, user: str, work: Path, owner: str, repo: str) -> str:
        """``git push`` as ``user`` to ``owner/repo``; the pushed sha."""
        env = self.env(user)
        git(work, env, "push", "-q", f"{self.git_url}/{owner}/{repo}.git", "main")
        return git(work, env, "rev-parse", "HEAD").strip()

    def call(self, name: str) -> requests.Response:
        return requests.get(f"{self.cli.url}/function/{name}", timeout=10)

    def answers(self, name: str, body: object, timeout: float = LIVE_TIMEOUT) -> None:
        def check() -> bool:
            response = self.call(name)
            return response.status_code == 200 and response.json() == body

        wait_until(
            check, timeout, lambda: f"{name} never answered {body!r}: {self.call(name).text}"
        )

    def logs(self, function: str) -> str:
        return self.cli.ok("logs", function).stdout


def _functions(cli: Cli) -> list[dict[str, object]]:
    user = (cli.state_dir / "secrets" / "gateway" / "basic-auth-user").read_text().strip()
    password = (cli.state_dir / "secrets" / "gateway" / "basic-auth-password").read_text().strip()
    response = requests.get(f"{cli.url}/system/functions", auth=(user, password), timeout=10)
    response.raise_for_status()
    return list(json.loads(response.text))


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[Remote]:
    cli = Cli(tmp_path_factory.mktemp("remote-state"), free_port(), venv_dir)
    try:
        cli.ok("up", "--detach", timeout=300)
        yield Remote(cli, tmp_path_factory.mktemp("remote-work"))
    finally:
        cli.run("down")


def test_push_makes_the_function_live_under_the_users_prefix(remote: Remote) -> None:
    work = remote.repo(
        "erin", "fns", {"stack.yml": stack_yml("hello"), "hello/handler.py": HELLO % "erin"}
    )
    sha = remote.push("erin", work, "erin", "fns")
    remote.answers("erin-hello", {"hi": "erin"})
    # At its public, user-prefixed URL through the edge-router too.
    router = f"http://127.0.0.1:{remote.cli.env['OFC_ROUTER_PORT']}"
    host = f"erin.localhost:{remote.cli.env['OFC_ROUTER_PORT']}"
    assert requests.get(f"{router}/hello", headers={"Host": host}, timeout=10).json() == {"hi": "erin"}
    labels = next(f for f in _functions(remote.cli) if f["name"] == "erin-hello")["labels"]
    assert labels["com.openfaas.cloud.git-sha"] == sha  # type: ignore[index]
    assert labels["com.openfaas.cloud.git-repo"] == "fns"  # type: ignore[index]


def test_a_push_that_removes_a_function_removes_it_and_keeps_the_other(remote: Remote) -> None:
    files = {
        "stack.yml": stack_yml("keep", "drop"),
        "keep/handler.py": HELLO % "keep",
        "drop/handler.py": HELLO % "drop",
    }
    work = remote.repo("erin", "two", files)
    remote.push("erin", work, "erin", "two")
    remote.answers("erin-drop", {"hi": "drop"})
    remote.answers("erin-keep", {"hi": "keep"})

    remote.commit("erin", work, {"stack.yml": stack_yml("keep"), "drop/handler.py": None})
    remote.push("erin", work, "erin", "two")
    wait_until(
        lambda: remote.call("erin-drop").status_code == 404,
        LIVE_TIMEOUT,
        "erin-drop still deployed",
    )
    assert remote.call("erin-keep").json() == {"hi": "keep"}


def test_a_broken_stack_file_leaves_the_previous_version_serving(remote: Remote) -> None:
    work = remote.repo(
        "erin", "broken", {"stack.yml": stack_yml("steady"), "steady/handler.py": HELLO % "v1"}
    )
    remote.push("erin", work, "erin", "broken")
    remote.answers("erin-steady", {"hi": "v1"})

    remote.commit(
        "erin", work,
        {"stack.yml": stack_yml("steady") + "    timeout: 5\n", "steady/handler.py": HELLO % "v2"},
    )  # fmt: skip
    remote.push("erin", work, "erin", "broken")
    wait_until(
        lambda: "unknown field 'timeout'" in remote.logs("git-tar"),
        LIVE_TIMEOUT,
        lambda: f"git-tar never said why the stack file is broken:\n{remote.logs('git-tar')}",
    )
    assert remote.call("erin-steady").json() == {"hi": "v1"}


def test_a_failing_build_leaves_the_previous_version_serving(remote: Remote) -> None:
    work = remote.repo(
        "erin", "deps", {"stack.yml": stack_yml("lasting"), "lasting/handler.py": HELLO % "v1"}
    )
    remote.push("erin", work, "erin", "deps")
    remote.answers("erin-lasting", {"hi": "v1"})

    remote.commit(
        "erin", work,
        {
            "lasting/handler.py": HELLO % "v2",
            "lasting/requirements.txt": "this-package-does-not-exist-ofc==0.0.1\n",
        },
    )  # fmt: skip
    sha = remote.push("erin", work, "erin", "deps")
    wait_until(
        lambda: sha[:12] in remote.logs("buildshiprun")
        and "failure" in remote.logs("buildshiprun"),
        LIVE_TIMEOUT,
        lambda: f"buildshiprun never reported the failed build:\n{remote.logs('buildshiprun')}",
    )
    assert remote.call("erin-lasting").json() == {"hi": "v1"}


def test_two_users_with_the_same_function_name_each_get_their_own(remote: Remote) -> None:
    a = remote.repo(
        "frank", "same", {"stack.yml": stack_yml("shared"), "shared/handler.py": HELLO % "frank"}
    )
    b = remote.repo(
        "grace", "same", {"stack.yml": stack_yml("shared"), "shared/handler.py": HELLO % "grace"}
    )
    remote.push("frank", a, "frank", "same")
    remote.push("grace", b, "grace", "same")
    remote.answers("frank-shared", {"hi": "frank"})
    remote.answers("grace-shared", {"hi": "grace"})


def test_pushing_to_another_users_repository_is_refused_and_deploys_nothing(remote: Remote) -> None:
    work = remote.repo(
        "mallory", "evil", {"stack.yml": stack_yml("hello"), "hello/handler.py": HELLO % "mallory"}
    )
    remote.user("heidi")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        remote.push("mallory", work, "heidi", "evil")
    assert "403" in refused.value.stderr or "denied" in refused.value.stderr.lower()
    assert remote.call("heidi-hello").status_code == 404
    assert remote.call("mallory-hello").status_code == 404
