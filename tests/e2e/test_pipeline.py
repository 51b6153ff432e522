"""The pipeline end to end: a signed GitHub push to deployed functions and statuses on the commit.

The whole platform runs as ``ofc up`` starts it (gateway, builder, the platform's own
functions); GitHub is the fake (every call checked against GitHub's OpenAPI
description), and repositories are served by a real git smart-HTTP server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fakes.git_server import GitServer
from tests.fakes.github import (
    FakeGitHub,
    installation_payload,
    push_payload,
    requires_specs,
    webhook_delivery,
)
from tests.helpers import Cli, free_port, wait_until

pytestmark = [requires_specs, pytest.mark.slow]

HELLO = 'def handle(event, context):\n    return {"statusCode": 200, "body": {"hi": "%s"}}\n'


def stack(*functions: str, requirements: dict[str, str] | None = None) -> dict[str, str]:
    """Files of a repository with one python3-http function per name."""
    lines = ["version: 1.0", "provider:", "  name: openfaas", "functions:"]
    files: dict[str, str] = {}
    for name in functions:
        lines += [
            f"  {name}:",
            "    lang: python3-http",
            f"    handler: ./{name}",
            f"    image: {name}:latest",
        ]
        files[f"{name}/handler.py"] = HELLO % name
        files[f"{name}/requirements.txt"] = (requirements or {}).get(name, "")
    files["stack.yml"] = "\n".join(lines) + "\n"
    return files


class Platform:
    """The running platform and its two stand-ins."""

    def __init__(self, cli: Cli, github: FakeGitHub, git: GitServer) -> None:
        self.cli = cli
        self.github = github
        self.git = git

    @property
    def webhook_secret(self) -> str:
        return (
            (self.cli.state_dir / "secrets" / "functions" / "github-webhook-secret")
            .read_text()
            .strip()
        )

    def push(
        self,
        owner: str,
        repo: str,
        sha: str,
        *,
        private: bool = False,
        installation: int | None = None,
        delivery: tuple[bytes, dict[str, str]] | None = None,
    ) -> requests.Response:
        """Deliver GitHub's push webhook for ``sha`` to github-event, as GitHub would."""
        if delivery is None:
            payload = push_payload(
                owner=owner,
                repo=repo,
                sha=sha,
                private=private,
                installation_id=installation or self.github.installation_id,
            )
            payload["repository"]["clone_url"] = self.git.clone_url(owner, repo)
            delivery = webhook_delivery("push", payload, self.webhook_secret)
        body, headers = delivery
        return requests.post(
            f"{self.cli.url}/function/github-event", data=body, headers=headers, timeout=10
        )

    def call(self, name: str) -> requests.Response:
        return requests.get(f"{self.cli.url}/function/{name}", timeout=10)

    def run(self, owner: str, repo: str, sha: str, context: str) -> dict[str, Any] | None:
        """The check run of ``context`` on the commit, once it is completed."""
        for run in self.github.runs_for(owner, repo, sha):
            if run["name"] == context and run["status"] == "completed":
                return run
        return None

    def wait_run(
        self, owner: str, repo: str, sha: str, context: str, timeout: float = 90
    ) -> dict[str, Any]:
        return wait_until(
            lambda: self.run(owner, repo, sha, context),
            timeout,
            lambda: f"no completed {context} check run; runs: {self.github.runs_for(owner, repo, sha)}",
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[Platform]:
    github = FakeGitHub().start()
    git = GitServer(tmp_path_factory.mktemp("git")).start()
    git.allow_token(lambda owner, repo, token: token in github.minted_tokens)
    cli = Cli(
        tmp_path_factory.mktemp("pipeline-state"),
        free_port(),
        venv_dir,
        GITHUB_APP_ID=github.app_id,
        GITHUB_API_URL=github.url,
        GIT_HOSTS=git.host,
    )
    key = tmp_path_factory.mktemp("app") / "app.pem"
    key.write_text(github.private_key_pem)
    try:
        cli.ok("up", "--detach", "--no-deploy")
        cli.ok("secret", "create", "private-key", "--from-file", str(key))
        cli.ok("deploy", "-f", "stack.yml", timeout=300)
        yield Platform(cli, github, git)
    finally:
        cli.run("down")
        git.stop()
        github.stop()


def test_push_deploys_the_function_and_reports_success_on_the_commit(platform: Platform) -> None:
    sha = platform.git.create_repo("alice", "fns", stack("hello"))
    assert platform.push("alice", "fns", sha).status_code == 202

    stack_run = platform.wait_run("alice", "fns", sha, "stack-deploy")
    function_run = platform.wait_run("alice", "fns", sha, "hello")
    assert stack_run["conclusion"] == "success"
    assert function_run["conclusion"] == "success"
    # The link on the commit is the function's public URL, through the edge-router.
    port = platform.cli.env["OFC_ROUTER_PORT"]
    assert function_run["details_url"] == f"http://alice.localhost:{port}/hello"
    assert platform.call("alice-hello").json() == {"hi": "hello"}
    # ... and the build log's page on the dashboard is linked from the run.
    log_page = f"http://system.localhost:{port}/dashboard/alice/hello/build/{sha}"
    assert f"[Build log]({log_page})" in function_run["output"]["summary"]
    through_router = requests.get(
        f"http://127.0.0.1:{port}/hello", headers={"Host": f"alice.localhost:{port}"}, timeout=10
    )
    assert through_router.json() == {"hi": "hello"}
    # Each context went through pending (in_progress) before its conclusion.
    writes = [
        c.json for c in platform.github.calls(path_contains="/check-runs")
        if c.method in ("POST", "PATCH") and "/repos/alice/fns/" in c.path
    ]  # fmt: skip
    for context in ("stack-deploy", "hello"):
        states = [w["status"] for w in writes if w.get("name") == context]
        assert states[0] == "in_progress" and states[-1] == "completed", (context, states)
    # One check run per context, created once and then updated (the original made new ones).
    names = [run["name"] for run in platform.github.runs_for("alice", "fns", sha)]
    assert sorted(names) == ["hello", "stack-deploy"]
    assert platform.github.violations == []


def test_push_that_removes_a_function_removes_it_and_keeps_the_others(platform: Platform) -> None:
    sha = platform.git.create_repo("alice", "two", stack("keep", "drop"))
    platform.push("alice", "two", sha)
    platform.wait_run("alice", "two", sha, "stack-deploy")
    assert platform.call("alice-drop").status_code == 200

    sha = platform.git.commit(
        "alice", "two", {"stack.yml": stack("keep")["stack.yml"], "drop/handler.py": None}
    )
    platform.push("alice", "two", sha)
    assert platform.wait_run("alice", "two", sha, "stack-deploy")["conclusion"] == "success"
    wait_until(
        lambda: platform.call("alice-drop").status_code == 404, 30, "alice-drop still deployed"
    )
    assert platform.call("alice-keep").json() == {"hi": "keep"}


def test_broken_stack_file_fails_with_its_reason_and_the_previous_version_keeps_serving(
    platform: Platform,
) -> None:
    sha = platform.git.create_repo("alice", "broken", stack("steady"))
    platform.push("alice", "broken", sha)
    platform.wait_run("alice", "broken", sha, "stack-deploy")

    sha = platform.git.commit(
        "alice", "broken", {"stack.yml": stack("steady")["stack.yml"] + "    timeout: 5\n"}
    )
    platform.push("alice", "broken", sha)
    run = platform.wait_run("alice", "broken", sha, "stack-deploy")
    assert run["conclusion"] == "failure"
    assert "unknown field 'timeout'" in run["output"]["summary"]
    assert platform.call("alice-steady").json() == {"hi": "steady"}


def test_failed_build_reports_failure_with_the_reason_and_the_previous_version_keeps_serving(
    platform: Platform,
) -> None:
    sha = platform.git.create_repo("alice", "deps", stack("lasting"))
    platform.push("alice", "deps", sha)
    platform.wait_run("alice", "deps", sha, "stack-deploy")

    sha = platform.git.commit(
        "alice",
        "deps",
        {
            "lasting/handler.py": HELLO % "new",
            "lasting/requirements.txt": "this-package-does-not-exist-ofc==0.0.1\n",
        },
    )
    platform.push("alice", "deps", sha)
    run = platform.wait_run("alice", "deps", sha, "lasting")
    assert run["conclusion"] == "failure"
    # The build log (pip's own reason) is on the check run, fetched from pipeline-log.
    assert "this-package-does-not-exist-ofc" in (run["output"].get("text") or "")
    assert platform.wait_run("alice", "deps", sha, "stack-deploy")["conclusion"] == "failure"
    assert platform.call("alice-lasting").json() == {"hi": "lasting"}


def test_two_owners_with_the_same_function_name_each_get_their_own(platform: Platform) -> None:
    platform.github.add_installation(2002, "bob")
    a = platform.git.create_repo("alice", "same", stack("shared"))
    b = platform.git.create_repo(
        "bob", "same", {**stack("shared"), "shared/handler.py": HELLO % "bob's"}
    )
    platform.push("alice", "same", a)
    platform.push("bob", "same", b, installation=2002)
    platform.wait_run("alice", "same", a, "stack-deploy")
    platform.wait_run("bob", "same", b, "stack-deploy")
    assert platform.call("alice-shared").json() == {"hi": "shared"}
    assert platform.call("bob-shared").json() == {"hi": "bob's"}


def test_the_same_delivery_sent_twice_builds_once(platform: Platform) -> None:
    sha = platform.git.create_repo("alice", "twice", stack("once"))
    payload = push_payload(
        owner="alice", repo="twice", sha=sha, installation_id=platform.github.installation_id
    )
    payload["repository"]["clone_url"] = platform.git.clone_url("alice", "twice")
    delivery = webhook_delivery("push", payload, platform.webhook_secret)
    assert platform.push("alice", "twice", sha, delivery=delivery).status_code == 202
    again = platform.push("alice", "twice", sha, delivery=delivery)
    assert again.status_code == 200
    assert "duplicate" in again.text
    platform.wait_run("alice", "twice", sha, "stack-deploy")
    clones = [r for r in platform.git.requests if "/alice/twice.git/info/refs" in r.path]
    assert len(clones) == 1


def test_private_repository_is_cloned_with_the_installation_token(platform: Platform) -> None:
    sha = platform.git.create_repo("alice", "secret-fns", stack("hidden"), private=True)
    platform.push("alice", "secret-fns", sha, private=True)
    assert platform.wait_run("alice", "secret-fns", sha, "stack-deploy")["conclusion"] == "success"
    assert platform.call("alice-hidden").json() == {"hi": "hidden"}
    fetches = [r for r in platform.git.requests if "/alice/secret-fns.git" in r.path]
    assert fetches and all(r.user in (None, "x-access-token") for r in fetches)
    assert any(r.authorised for r in fetches)


def test_uninstalling_the_app_removes_all_of_that_owners_functions_and_no_one_elses(
    platform: Platform,
) -> None:
    platform.github.add_installation(2003, "carol")
    carol = platform.git.create_repo("carol", "gone", stack("bye"))
    alice = platform.git.create_repo("alice", "stays", stack("stay"))
    platform.push("carol", "gone", carol, installation=2003)
    platform.push("alice", "stays", alice)
    platform.wait_run("carol", "gone", carol, "stack-deploy")
    platform.wait_run("alice", "stays", alice, "stack-deploy")
    assert platform.call("carol-bye").status_code == 200

    body, headers = webhook_delivery(
        "installation",
        installation_payload(action="deleted", account="carol"),
        platform.webhook_secret,
    )
    assert (
        requests.post(
            f"{platform.cli.url}/function/github-event", data=body, headers=headers, timeout=10
        ).status_code
        == 202
    )
    wait_until(
        lambda: platform.call("carol-bye").status_code == 404,
        30,
        "carol-bye survived the uninstall",
    )
    assert platform.call("alice-stay").json() == {"hi": "stay"}
