"""Signing in to the dashboard in a real headless Chromium, through the whole edge.

``ofc up`` runs the platform as a user gets it: the edge-router on its port, edge-auth
with a GitHub OAuth app (the fake GitHub plays github.com's sign-in pages and API), the
dashboard and the pipeline. alice pushes a function to the built-in git remote; then, in
the browser, she opens ``http://system.localhost:<port>/dashboard/``, is sent to sign
in, comes back with the session cookie, sees her function, and opens its build log.
Chromium resolves ``*.localhost`` to loopback by itself, so every hop uses the public
host names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sdk.tokens import COOKIE_NAME
from tests.e2e.test_git_remote_pipeline import HELLO, Remote, stack_yml
from tests.fakes.github import FakeGitHub
from tests.helpers import Cli, free_port, wait_until

if TYPE_CHECKING:
    from tests.browser import BrowserPage

pytestmark = pytest.mark.slow
pytest_plugins = ["tests.browser"]


@dataclass(frozen=True)
class Edge:
    remote: Remote
    github: FakeGitHub
    port: int  # the router's

    def url(self, host: str, path: str) -> str:
        return f"http://{host}.localhost:{self.port}{path}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[Edge]:
    github = FakeGitHub().start()
    port = free_port()
    app = github.add_oauth_app(f"http://auth.system.localhost:{port}/callback")
    cli = Cli(
        tmp_path_factory.mktemp("sign-in-state"),
        free_port(),
        venv_dir,
        OFC_ROUTER_PORT=str(port),
        OFC_OAUTH_CLIENT_ID=app.client_id,
        OFC_GITHUB_URL=github.url,
        OFC_GITHUB_API_URL=github.url,
    )
    try:
        cli.ok("up", "--detach", timeout=300)
        # The operator stores the OAuth app's secret over ofc up's placeholder.
        cli.ok("secret", "create", "oauth-client-secret", "--from-literal", app.client_secret)
        remote = Remote(cli, tmp_path_factory.mktemp("sign-in-work"))
        work = remote.repo(
            "alice", "fns", {"stack.yml": stack_yml("hello"), "hello/handler.py": HELLO % "alice"}
        )
        remote.push("alice", work, "alice", "fns")
        remote.answers("alice-hello", {"hi": "alice"})
        yield Edge(remote, github, port)
    finally:
        cli.run("down")
        github.stop()


def test_sign_in_with_github_then_see_my_function_and_its_build_log(
    edge: Edge, browser_page: BrowserPage, tmp_path: Path
) -> None:
    edge.github.sign_in("alice", name="Alice Liddell", orgs=["acme"])

    landed = browser_page.open(edge.url("system", "/dashboard/"))

    # Router -> edge-auth /login -> GitHub authorize -> edge-auth /callback -> dashboard.
    assert (landed.url, landed.status) == (edge.url("system", "/dashboard/"), 200)
    cookies = browser_page.cookies(edge.url("system", "/"))
    assert COOKIE_NAME in cookies
    listed = browser_page.text("main")
    assert "hello" in listed and "fns" in listed
    browser_page.screenshot("signed-in-dashboard")

    details = browser_page.click("hello")
    assert details.url == edge.url("system", "/dashboard/alice/hello")
    sha = edge.remote.cli.ok("logs", "buildshiprun").stdout  # the build's commit is in there
    build_links = [text for text, _ in browser_page.links() if text.startswith("build log ")]
    assert build_links, browser_page.text("main")
    build = browser_page.click(build_links[0])
    assert build.status == 200 and "/dashboard/alice/hello/build/" in build.url
    assert build.url.rsplit("/", 1)[1][:12] in sha
    log_text = browser_page.text("pre")
    assert "built " in log_text or "Successfully" in log_text or "tagged" in log_text
    shot = browser_page.screenshot("build-log")
    assert shot.stat().st_size > 10_000


def test_a_user_sees_only_their_own_functions(edge: Edge, browser_page: BrowserPage) -> None:
    edge.github.sign_in("mallory", orgs=[])

    landed = browser_page.open(edge.url("system", "/dashboard/"))
    assert landed.status == 200
    assert "alice" not in browser_page.text("main")
    other = browser_page.open(edge.url("system", "/dashboard/alice/hello"))
    assert other.status == 404


def test_users_function_hosts_never_get_the_session_cookie(
    edge: Edge, browser_page: BrowserPage
) -> None:
    edge.github.sign_in("alice", orgs=[])
    browser_page.open(edge.url("system", "/dashboard/"))
    assert COOKIE_NAME in browser_page.cookies(edge.url("system", "/"))
    assert COOKIE_NAME in browser_page.cookies(edge.url("auth.system", "/"))

    answered = browser_page.open(edge.url("alice", "/hello"))

    assert answered.status == 200
    assert '"hi": "alice"' in browser_page.text("body")
    # On localhost the cookie's Domain is system.localhost: the browser does not even send
    # it to a user's host (with a real root domain, the router strips it: tests/router).
    assert COOKIE_NAME not in browser_page.cookies(edge.url("alice", "/"))


def test_a_failed_build_pushed_to_the_built_in_remote_shows_why_on_the_dashboard(
    edge: Edge, browser_page: BrowserPage
) -> None:
    remote = edge.remote
    work = remote.repo(
        "alice", "deps", {"stack.yml": stack_yml("kept"), "kept/handler.py": HELLO % "v1"}
    )
    remote.push("alice", work, "alice", "deps")
    remote.answers("alice-kept", {"hi": "v1"})
    remote.commit(
        "alice", work,
        {"kept/handler.py": HELLO % "v2", "kept/requirements.txt": "this-package-does-not-exist-ofc==0.0.1\n"},
    )  # fmt: skip
    sha = remote.push("alice", work, "alice", "deps")
    edge.github.sign_in("alice", orgs=[])
    page = edge.url("system", "/dashboard/alice/kept")

    def shown() -> bool:
        browser_page.open(page)
        return f"build {sha[:7]} failed" in browser_page.text("main")

    wait_until(
        shown, 120, lambda: f"the dashboard never showed the failure:\n{browser_page.text('main')}"
    )
    text = browser_page.text("main")
    assert "this-package-does-not-exist-ofc" in text  # the reason, from the commit status
    assert remote.call("alice-kept").json() == {"hi": "v1"}  # the previous version serves
    browser_page.screenshot("failed-build")
