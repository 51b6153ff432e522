"""Fixtures of edge-auth's tests: a real ``python -m auth`` on a free port, signing in
through the fake GitHub's OAuth web flow, and a browser played by hand.

The browser follows each redirect itself, so every hop can be checked: the public URLs
edge-auth sends it to (``http://auth.system.localhost:8000/...``, the router's) are
mapped to the service's loopback port, and cookies are carried per name. Every service
is stopped by its PID in the fixture's teardown.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import Morsel, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sdk.tokens import generate_keypair
from tests.fakes.github import REST_SPEC, SPECS_MISSING, FakeGitHub, OAuthApp
from tests.fakes.github import (
    fake_github as _fake_github,  # noqa: F401  (registers the fake_github fixture)
)
from tests.helpers import free_port, start_service, stop_pid

DOMAIN = "localhost"
PUBLIC = "http://auth.system.localhost:8000"  # edge-auth as browsers reach it (the router)
ISSUER = PUBLIC
AUDIENCE = "http://system.localhost:8000"
CALLBACK = f"{PUBLIC}/callback"
CUSTOMERS = "alice\nacme-org  # an organisation: its members may sign in\n"


def set_cookies(response: requests.Response) -> dict[str, Morsel[str]]:
    """Every ``Set-Cookie`` of ``response`` by name, attributes parsed."""
    jar: dict[str, Morsel[str]] = {}
    for header in response.raw.headers.getlist("Set-Cookie"):
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        jar.update(cookie)
    return jar


@dataclass
class EdgeAuth:
    """A running ``python -m auth`` and a browser's view of it."""

    port: int
    proc: subprocess.Popen  # type: ignore[type-arg]
    log_path: Path
    secrets_dir: Path
    private_key: bytes
    public_key: bytes
    github: FakeGitHub
    oauth_app: OAuthApp | None
    cookies: dict[str, str] = field(default_factory=dict)  # the browser's, for edge-auth's host

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(
        self,
        path: str,
        *,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        """``GET`` a path (or one of edge-auth's public URLs) as the browser, its cookies
        sent unless ``headers`` has a ``Cookie``; cookies set are kept, cleared ones dropped."""
        if path.startswith(("http://", "https://")):  # a public URL: the router's host
            parts = urlsplit(path)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = dict(headers or {})
        if self.cookies and "Cookie" not in headers:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers.setdefault("Host", urlsplit(PUBLIC).netloc)
        response = requests.get(
            self.url + path, params=params, headers=headers, allow_redirects=False, timeout=15
        )
        for name, morsel in set_cookies(response).items():
            if morsel["max-age"] == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value
        return response

    def start_login(self, r: str | None = "/dashboard/") -> requests.Response:
        """``/login`` (with ``r`` unless None): the 302 to GitHub."""
        return self.get("/login", params={} if r is None else {"r": r})

    def authorize(self, authorize_url: str) -> str:
        """The browser at GitHub's authorize page; returns the URL GitHub sends it back to."""
        response = requests.get(authorize_url, allow_redirects=False, timeout=15)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def sign_in(self, r: str | None = "/dashboard/") -> requests.Response:
        """The whole flow: ``/login``, GitHub, ``/callback``; returns the callback's answer."""
        login = self.start_login(r)
        assert login.status_code == 302, login.text
        callback = self.authorize(login.headers["Location"])
        assert "/callback?" in callback, callback
        return self.get(callback)


def query(url: str) -> dict[str, str]:
    """A URL's query parameters (first value of each)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def launch(
    folder: Path,
    github: FakeGitHub,
    *,
    oauth: bool = True,
    client_secret: str | None = None,
    callback: str = CALLBACK,
    **env: str,
) -> EdgeAuth:
    """Start edge-auth with its secrets in ``folder``, against ``github`` with an OAuth app
    registered for its callback URL (unless ``oauth`` is False) and the customers
    ``alice`` and ``acme-org``; ``client_secret`` overrides the stored secret, ``callback``
    the OAuth app's callback URL."""
    secrets_dir = folder / "secrets"
    secrets_dir.mkdir(parents=True)
    private, public = generate_keypair()
    (secrets_dir / "jwt-private-key").write_bytes(private)
    (secrets_dir / "jwt-public-key").write_bytes(public)
    app = github.add_oauth_app(callback) if oauth else None
    secret = client_secret if client_secret is not None else (app.client_secret if app else "")
    if secret:
        (secrets_dir / "oauth-client-secret").write_text(secret + "\n")
    customers = folder / "customers"
    customers.write_text(CUSTOMERS)
    port = free_port()
    log_path = folder / f"auth-{port}.log"
    settings = {
        "OFC_AUTH_PORT": str(port),
        "OFC_AUTH_SECRETS_DIR": str(secrets_dir),
        "OFC_STATE_DIR": str(folder / "state"),
        "OFC_DOMAIN": DOMAIN,
        "OFC_PUBLIC_SCHEME": "http",
        "OFC_PUBLIC_PORT": "8000",
        "OFC_OAUTH_CLIENT_ID": app.client_id if app else "",
        "OFC_GITHUB_URL": github.url,
        "OFC_GITHUB_API_URL": github.url,
        "customers_path": str(customers),
        **env,
    }
    proc = start_service("auth", settings, log_path, f"http://127.0.0.1:{port}/healthz")
    return EdgeAuth(port, proc, log_path, secrets_dir, private, public, github, app)


@pytest.fixture
def start_edge_auth(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Callable[..., EdgeAuth]]:
    """:func:`launch` against ``fake_github``, as many services as a test needs."""
    started: list[EdgeAuth] = []

    def start(**options: object) -> EdgeAuth:
        service = launch(tmp_path / f"auth-{len(started)}", fake_github, **options)  # type: ignore[arg-type]
        started.append(service)
        return service

    yield start
    for service in started:
        stop_pid(service.proc)


@pytest.fixture(scope="module")
def edge_auth_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeAuth]:
    """One edge-auth for a whole module of tests that only read (``/q/``, refused ``r``)."""
    if not REST_SPEC.exists():
        pytest.skip(SPECS_MISSING)
    github = FakeGitHub().start()
    service = launch(tmp_path_factory.mktemp("edge-auth"), github)
    yield service
    stop_pid(service.proc)
    github.stop()


@pytest.fixture
def edge_auth(edge_auth_module: EdgeAuth) -> EdgeAuth:
    """The module's edge-auth with a fresh browser (no cookies)."""
    edge_auth_module.cookies = {}
    return edge_auth_module
