"""The dashboard in a real headless Chromium: deployed from the root stack.yml onto a real
gateway beside pipeline-log, its secrets stored through the gateway API, users' functions
deployed with the labels buildshiprun sets, and a build log stored as the pipeline does.

The browser carries the session cookie edge-auth would have set (a token from sdk.tokens
signed with the key pair stored as the platform's secrets). Without the router in front,
the dashboard is opened at the gateway's ``/function/dashboard/`` (``DASHBOARD_URL``).

``OFC_UPDATE_SCREENSHOTS=1`` also copies the overview's screenshot to
``docs/img/dashboard.png``.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import pytest

from sdk.tokens import COOKIE_NAME, generate_keypair, issue_token
from tests.conftest import ECHO_HANDLER, REPO, RunningGateway, free_port
from tests.functions.test_dashboard import (
    SECRET,
    deploy_from_stack,
    labels,
    store_build_log,
)

if TYPE_CHECKING:
    # Imported by pytest as a plugin (below) first, so its asserts are rewritten.
    from tests.browser import BrowserPage

pytestmark = pytest.mark.slow
# The browser fixtures (chromium, browser_page).
pytest_plugins = ["tests.browser"]

SCREENSHOT = REPO / "docs" / "img" / "dashboard.png"
SHA_HELLO = "4f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39"
SHA_RESIZE = "9be1c0d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8"
SHA_API = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
BUILD_LOG = (
    "Step 1/4 : FROM python:3.11-slim\n"
    "Step 2/4 : COPY function/requirements.txt .\n"
    "Step 3/4 : RUN pip install -r requirements.txt\n"
    "Successfully installed requests-2.32.5\n"
    "Step 4/4 : COPY function/ function/\n"
    "Successfully built alice/hello:latest-4f2a9c1\n"
)


class SignInStandIn:
    """Where edge-auth will listen (``auth.system.localhost:<edge port>``): records each
    request's Host and path, and answers with a sign-in page."""

    def __init__(self, port: int) -> None:
        self.requests: list[tuple[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.headers.get("Host", ""), self.path))
                body = b"<!doctype html><title>Sign in</title><p>Sign in with GitHub</p>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@dataclass(frozen=True)
class Platform:
    gateway: RunningGateway
    private_key: bytes
    edge_port: int  # the router's port (OFC_PUBLIC_PORT), in the token's issuer and audience
    sign_in_page: SignInStandIn

    @property
    def dashboard(self) -> str:
        return f"{self.gateway.url}/function/dashboard"

    @property
    def issuer(self) -> str:
        return f"http://auth.system.localhost:{self.edge_port}"

    @property
    def audience(self) -> str:
        return f"http://system.localhost:{self.edge_port}"

    def sign_in(self, page: BrowserPage, login: str, orgs: tuple[str, ...] = ()) -> None:
        """Give the browser the session cookie edge-auth sets after a GitHub sign-in."""
        token = issue_token(
            self.private_key, login=login, name=f"{login.title()} Liddell", orgs=orgs,
            issuer=self.issuer, audience=self.audience,
        )  # fmt: skip
        page.set_cookie(COOKIE_NAME, token, self.gateway.url)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[Platform]:
    state = tmp_path_factory.mktemp("dashboard-browser") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    edge_port = free_port()
    sign_in_page = SignInStandIn(edge_port)
    try:
        private_key, public_key = generate_keypair()
        user, password = gw.credentials
        for name, value in {
            "payload-secret": SECRET.encode(),
            "basic-auth-user": user.encode(),
            "basic-auth-password": password.encode(),
            "jwt-public-key": public_key,
        }.items():
            gw.client.create_secret(name, value)
        deploy_from_stack(
            gw,
            "dashboard",
            "pipeline-log",
            DASHBOARD_URL=f"{gw.url}/function/dashboard",
            OFC_PUBLIC_PORT=str(edge_port),
        )
        now = int(time.time())
        repo_url = {"com.openfaas.cloud.git-repo-url": "https://github.com/alice/fns"}
        gw.deploy(
            "alice-hello",
            ECHO_HANDLER,
            labels=labels("alice", "fns", SHA_HELLO, now - 600),
            annotations=repo_url,
        )
        gw.deploy(
            "alice-resize", ECHO_HANDLER, labels=labels("alice", "images", SHA_RESIZE, now - 7200)
        )
        gw.deploy("acme-api", ECHO_HANDLER, labels=labels("acme", "platform", SHA_API, now - 86400))
        gw.deploy("bob-private", ECHO_HANDLER, wait=False, labels=labels("bob", "s", SHA_API, now))
        for _ in range(3):
            gw.client.invoke("alice-hello", b"hi")
        store_build_log(gw, "alice", "fns", SHA_HELLO, "hello", BUILD_LOG)
        yield Platform(gw, private_key, edge_port, sign_in_page)
    finally:
        sign_in_page.stop()
        gw.stop()


def test_dashboard_in_chromium_lists_functions_and_opens_a_build_log(
    platform: Platform, browser_page: BrowserPage
) -> None:
    platform.sign_in(browser_page, "alice", ("acme",))

    overview = browser_page.open(f"{platform.dashboard}/")
    listed = browser_page.text("main")
    shot = browser_page.screenshot("dashboard")
    if os.environ.get("OFC_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    details = browser_page.click("hello")
    details_text = browser_page.text("main")
    browser_page.screenshot("function")
    build = browser_page.click(f"build log {SHA_HELLO[:7]}")
    build_text = browser_page.text("pre")
    browser_page.screenshot("build-log")
    logs = browser_page.click("hello")  # the breadcrumb back to the function
    runtime = browser_page.click("Runtime logs")
    runtime_text = browser_page.text("main")
    browser_page.screenshot("runtime-logs")

    assert overview.status == 200
    assert all(name in listed for name in ("hello", "resize", "acme", "api", SHA_HELLO[:7]))
    assert "bob" not in listed and "private" not in listed
    assert (details.url, details.status) == (f"{platform.dashboard}/alice/hello", 200)
    assert SHA_HELLO in details_text and "3" in details_text.split("Invocations", 1)[1]
    assert build.url == f"{platform.dashboard}/alice/hello/build/{SHA_HELLO}"
    assert build_text == BUILD_LOG
    assert logs.status == 200
    assert runtime.url.endswith("/alice/hello/logs")
    assert "listening on 127.0.0.1" in runtime_text  # the replica's own start line
    assert shot.stat().st_size > 10_000
    # The inline stylesheet applied (its CSP hash matched) and nothing was refused.
    header = browser_page.raw.locator("header.top")
    assert header.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(13, 27, 42)"
    assert browser_page.errors == []


def test_dashboard_in_chromium_without_a_session_goes_to_sign_in(
    platform: Platform, browser_page: BrowserPage
) -> None:
    """Chromium follows the 302 to edge-auth's login page, at auth.system.localhost, which
    it resolves to loopback itself; ``r`` brings the user back to the page they asked for."""
    visit = browser_page.open(f"{platform.dashboard}/alice/hello")

    host, path = next(r for r in platform.sign_in_page.requests if r[1].startswith("/login?"))
    assert visit.url.startswith(f"{platform.issuer}/login?")
    assert host == f"auth.system.localhost:{platform.edge_port}"
    # Back to this page once signed in: DASHBOARD_URL is the gateway's path here.
    assert parse_qs(urlsplit(path).query) == {"r": [f"{platform.dashboard}/alice/hello"]}
    assert browser_page.text() == "Sign in with GitHub"


def test_dashboard_in_chromium_hides_another_owners_function(
    platform: Platform, browser_page: BrowserPage
) -> None:
    platform.sign_in(browser_page, "alice", ("acme",))

    visit = browser_page.open(f"{platform.dashboard}/bob/private")

    assert visit.status == 404
    assert "Not found" in browser_page.text("h1")
