"""A real headless Chromium for tests: fixtures ``chromium`` and ``browser_page``.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``OFC_CHROMIUM``),
installed with apt when it is missing and the tests run as root; otherwise the tests
that need it are skipped, saying why. It is driven by Playwright for Python (the
``playwright`` package in requirements-dev.txt) over the DevTools protocol: Playwright
launches the system Chromium itself (``executable_path``) and never downloads a browser
(``playwright install`` is not needed, nor run).

Flags: headless, no sandbox (we run as root), no GPU, and none of Chromium's own
background traffic (component updates, sync, QUIC probes, first-run pings): on a closed
network those connections are refused and only slow the browser down. Playwright gives
every launch a fresh temporary ``--user-data-dir`` and removes it on close; every test
gets its own browser context, so no cookie or cache leaks from one test to the next.
Chromium resolves ``*.localhost`` to loopback by itself, so
``http://system.localhost:<port>/`` reaches a router on 127.0.0.1 with that Host.

Use::

    pytest_plugins = ["tests.browser"]  # in the test module: the fixtures below

    def test_dashboard(browser_page: BrowserPage) -> None:
        browser_page.set_cookie("openfaas_cloud_token", token, url)
        assert browser_page.open(url).status == 200
        browser_page.click("hello")
        assert "Build log" in browser_page.text()

``browser_page.raw`` is the Playwright ``Page`` for anything else (forms, routing,
waiting on selectors).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

__all__ = ["BrowserPage", "Visit", "browser_page", "chromium", "chromium_path", "CHROMIUM_FLAGS"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Tests talk to loopback only: never through a proxy from the environment.
    "--no-proxy-server",
]
# Milliseconds Playwright waits for a navigation or an element.
TIMEOUT_MS = 30_000
APT_TIMEOUT = 900.0


def chromium_path() -> str:
    """Chromium's executable, installed with apt when missing and we are root; else a skip."""
    path = os.environ.get("OFC_CHROMIUM", "/usr/bin/chromium")
    if Path(path).is_file():
        return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            f"no Chromium at {path}: install it (as root: apt-get install -y "
            "--no-install-recommends chromium) or set OFC_CHROMIUM"
        )
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
    if done.returncode != 0:
        # A fresh machine may have no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=APT_TIMEOUT)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
    if done.returncode != 0 or not Path(path).is_file():
        pytest.skip(f"could not install Chromium with apt-get: {done.stderr.strip()[-500:]}")
    return path


@dataclass(frozen=True)
class Visit:
    """Where a navigation ended: the final URL and its HTTP status (None without a response)."""

    url: str
    status: int | None


class BrowserPage:
    """One tab in its own browser context, with the few actions tests need.

    Every console error and uncaught page error is kept in :attr:`errors`, so a test can
    assert that a page loaded cleanly (a Content-Security-Policy violation is one).
    """

    def __init__(self, context: BrowserContext, artifacts: Path) -> None:
        self.context = context
        self.raw: Page = context.new_page()
        self.artifacts = artifacts
        self.errors: list[str] = []
        self.raw.on("console", self._console)
        self.raw.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def open(self, url: str) -> Visit:
        """Navigate to ``url`` (following redirects) and wait for the page to load."""
        response = self.raw.goto(url, wait_until="load")
        return Visit(self.raw.url, response.status if response is not None else None)

    def click(self, text: str) -> Visit:
        """Follow the link whose text is exactly ``text``, as a user clicking it."""
        with self.raw.expect_navigation(wait_until="load") as navigation:
            self.raw.get_by_role("link", name=text, exact=True).first.click()
        response = navigation.value
        return Visit(self.raw.url, response.status if response is not None else None)

    def text(self, selector: str = "body") -> str:
        """The visible text of the first element matching ``selector``."""
        return self.raw.inner_text(selector)

    def links(self) -> list[tuple[str, str]]:
        """Every link on the page: (visible text, absolute URL)."""
        return [
            (a.inner_text().strip(), str(a.evaluate("a => a.href")))
            for a in self.raw.locator("a[href]").all()
        ]

    def set_cookie(self, name: str, value: str, url: str, **attributes: Any) -> None:
        """Store a cookie for ``url``'s host, as if that site had set it (HttpOnly, Lax)."""
        cookie = {"name": name, "value": value, "url": url, "httpOnly": True, "sameSite": "Lax"}
        self.context.add_cookies([{**cookie, **attributes}])

    def cookies(self, url: str | None = None) -> dict[str, str]:
        """The cookies the browser holds (for ``url`` only when given): name to value."""
        held = self.context.cookies(url) if url else self.context.cookies()
        return {c["name"]: c["value"] for c in held}

    def screenshot(self, name: str) -> Path:
        """A full-page PNG under the test's artifacts folder; returns its path."""
        path = self.artifacts / f"{name}.png"
        self.raw.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module (contexts keep tests apart).

    Not per session: Playwright's sync API keeps its asyncio loop marked as running on
    the main thread while it is alive, and every later test calling ``asyncio.run``
    would then fail with "cannot be called from a running event loop".
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -r requirements-dev.txt")
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Browser, tmp_path: Path) -> Iterator[BrowserPage]:
    """A fresh browser context and tab; screenshots go to ``<tmp_path>/browser/``."""
    artifacts = tmp_path / "browser"
    artifacts.mkdir()
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield BrowserPage(context, artifacts)
    finally:
        context.close()
