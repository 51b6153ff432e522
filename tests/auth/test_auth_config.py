"""edge-auth's settings: checked at start, named in every refusal; and a service without a
GitHub OAuth app that still starts and says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from auth.config import CLIENT_SECRET_PLACEHOLDER, AuthConfig, ConfigError
from sdk.tokens import COOKIE_NAME, generate_keypair, issue_token, verify_token
from tests.auth.conftest import AUDIENCE, ISSUER, EdgeAuth, query, set_cookies
from tests.helpers import REPO

StartEdgeAuth = Callable[..., EdgeAuth]


def test_defaults_serve_localhost_behind_the_router_on_8000() -> None:
    cfg = AuthConfig.from_env({"OFC_STATE_DIR": "/srv/ofc"})

    assert (cfg.host, cfg.port) == ("127.0.0.1", 8083)
    assert cfg.issuer == "http://auth.system.localhost:8000"
    assert cfg.audience == "http://system.localhost:8000"
    assert cfg.callback_url == "http://auth.system.localhost:8000/callback"
    assert cfg.secrets_dir == Path("/srv/ofc/secrets/functions")
    assert cfg.github_url == "https://github.com"
    assert cfg.github_api_url == "https://api.github.com"
    assert cfg.token_ttl == 48 * 3600
    assert cfg.client_id == ""
    assert cfg.validate_customers is False


def test_https_on_its_default_port_leaves_the_port_out_of_urls() -> None:
    cfg = AuthConfig.from_env(
        {"OFC_DOMAIN": "Example.COM", "OFC_PUBLIC_SCHEME": "https", "OFC_PUBLIC_PORT": "443"}
    )

    assert cfg.domain == "example.com"
    assert cfg.issuer == "https://auth.system.example.com"
    assert cfg.audience == "https://system.example.com"
    assert cfg.cookie_domain == "example.com"  # the root domain: every platform host


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OFC_DOMAIN": "http://example.com"}, "OFC_DOMAIN"),
        ({"OFC_DOMAIN": "localhost:8000"}, "OFC_DOMAIN"),
        ({"OFC_DOMAIN": "127.0.0.1"}, "OFC_DOMAIN"),
        ({"OFC_DOMAIN": "a..example.com"}, "OFC_DOMAIN"),
        ({"OFC_PUBLIC_SCHEME": "ftp"}, "OFC_PUBLIC_SCHEME"),
        ({"OFC_PUBLIC_PORT": "0"}, "OFC_PUBLIC_PORT"),
        ({"OFC_AUTH_PORT": "http"}, "OFC_AUTH_PORT"),
        ({"OFC_AUTH_TOKEN_TTL": "10s"}, "OFC_AUTH_TOKEN_TTL"),
        ({"OFC_AUTH_TOKEN_TTL": "two days"}, "OFC_AUTH_TOKEN_TTL"),
        ({"OFC_GITHUB_URL": "github.com"}, "OFC_GITHUB_URL"),
        ({"OFC_GITHUB_API_URL": "https://user:pw@api.github.com"}, "OFC_GITHUB_API_URL"),
        ({"validate_customers": "true"}, "customers_path"),
        ({"customers_path": "/c", "customers_url": "http://c/"}, "customers_path"),
        ({"validate_customers": "flase", "customers_path": "/c"}, "validate_customers"),
    ],
    ids=[
        "domain-url", "domain-port", "domain-ip", "domain-empty-label", "scheme", "public-port",
        "port", "ttl-short", "ttl-words", "github-url", "api-url-credentials",
        "customers-on-without-list", "customers-both", "customers-typo",
    ],
)  # fmt: skip
def test_bad_setting_is_refused_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        AuthConfig.from_env(env)


def run_auth(secrets_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m auth`` that is expected to stop at start."""
    settings = {**os.environ, "OFC_AUTH_SECRETS_DIR": str(secrets_dir), "OFC_AUTH_PORT": "0", **env}
    return subprocess.run(
        [sys.executable, "-m", "auth"], cwd=REPO, env=settings, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip


def test_service_without_the_signing_key_does_not_start(tmp_path: Path) -> None:
    proc = run_auth(tmp_path)

    assert proc.returncode == 2
    assert "jwt-private-key" in proc.stderr and "ofc up" in proc.stderr


def test_service_with_a_public_key_of_another_pair_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "jwt-private-key").write_bytes(generate_keypair()[0])
    (tmp_path / "jwt-public-key").write_bytes(generate_keypair()[1])

    proc = run_auth(tmp_path)

    assert proc.returncode == 2
    assert "jwt-public-key is not the public half" in proc.stderr
    assert "PRIVATE KEY" not in proc.stderr + proc.stdout


def test_service_with_a_bad_setting_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "jwt-private-key").write_bytes(generate_keypair()[0])

    proc = run_auth(tmp_path, OFC_PUBLIC_SCHEME="gopher")

    assert proc.returncode == 2
    assert "OFC_PUBLIC_SCHEME" in proc.stderr


def test_without_an_oauth_app_login_answers_503_and_sessions_still_check(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth(oauth=False)

    login = auth.get("/login", params={"r": "/dashboard/"})
    callback = auth.get("/callback?code=x&state=y")
    session = auth.get("/q/", headers={"Cookie": f"{COOKIE_NAME}={valid_token(auth)}"})

    assert login.status_code == 503
    assert "OFC_OAUTH_CLIENT_ID" in login.text
    assert callback.status_code == 503
    assert session.status_code == 200
    assert auth.github.requests == []


@pytest.mark.parametrize(
    "secret", ["", CLIENT_SECRET_PLACEHOLDER], ids=["no-secret-file", "ofc-up-placeholder"]
)
def test_without_the_client_secret_login_answers_503_naming_the_secret(
    start_edge_auth: StartEdgeAuth, secret: str
) -> None:
    auth = start_edge_auth(client_secret=secret)

    login = auth.get("/login")

    assert login.status_code == 503
    assert "oauth-client-secret" in login.text
    assert auth.github.requests == []


def test_https_platform_sets_a_secure_cookie_for_its_own_issuer(
    start_edge_auth: StartEdgeAuth,
) -> None:
    callback = "https://auth.system.localhost/callback"
    auth = start_edge_auth(OFC_PUBLIC_SCHEME="https", OFC_PUBLIC_PORT="443", callback=callback)
    auth.github.sign_in("alice")

    login = auth.start_login("https://system.localhost/dashboard/")
    assert query(login.headers["Location"])["redirect_uri"] == callback
    assert set_cookies(login)["ofc_auth_login"]["secure"] is True
    answer = auth.get(auth.authorize(login.headers["Location"]))

    assert answer.status_code == 302
    cookie = set_cookies(answer)[COOKIE_NAME]
    assert cookie["secure"] is True
    identity = verify_token(
        cookie.value, auth.public_key,
        issuer="https://auth.system.localhost", audience="https://system.localhost",
    )  # fmt: skip
    assert identity.login == "alice"


def test_oauth_app_registered_for_another_callback_gives_a_502(
    start_edge_auth: StartEdgeAuth,
) -> None:
    # GitHub refuses the redirect_uri and sends the browser to the registered callback.
    auth = start_edge_auth(callback="http://auth.system.localhost:9999/callback")
    auth.github.sign_in("alice")

    answer = auth.sign_in()

    assert answer.status_code == 502
    assert "redirect_uri_mismatch" in answer.text
    assert auth.github.calls("POST") == []


def valid_token(auth: EdgeAuth) -> str:
    return issue_token(
        auth.private_key, login="alice", name="Alice", orgs=[], issuer=ISSUER, audience=AUDIENCE
    )


def test_storing_the_real_client_secret_enables_sign_in_without_a_restart(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth(client_secret=CLIENT_SECRET_PLACEHOLDER)
    assert auth.get("/login").status_code == 503
    assert auth.oauth_app is not None

    # What `ofc secret create oauth-client-secret ...` does to the mounted file.
    (auth.secrets_dir / "oauth-client-secret").write_text(auth.oauth_app.client_secret + "\n")
    auth.github.sign_in("alice")
    login = auth.get("/login", params={"r": "http://system.localhost:8000/dashboard/"})

    assert login.status_code == 302
    assert login.headers["Location"].startswith(f"{auth.github.url}/login/oauth/authorize?")


def test_on_localhost_the_cookie_domain_is_the_system_host_browsers_accept() -> None:
    assert AuthConfig.from_env({"OFC_DOMAIN": "localhost"}).cookie_domain == "system.localhost"
