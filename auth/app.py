"""edge-auth's composition root, its route table and its one error mapper.

::

    GET /login?r=<return URL>    302 to GitHub's authorize page (503 when no OAuth app is set up)
    GET /callback?code=&state=   GitHub comes back here: session cookie set, 302 to the return URL
    GET /q/?r=<path>             the router's question: 200 with X-OFC-User, X-OFC-Orgs,
                                 X-OFC-Expires when the request carries a valid session; else 401
    GET /logout?r=<return URL>   session cookie cleared; 302 to r, or a signed-out page
    GET /healthz                 200 once serving

Served behind the router at ``auth.system.<domain>``.
"""

from __future__ import annotations

import logging

import requests
from flask import Flask, Response

from auth.config import CLIENT_SECRET, AuthConfig
from auth.github import GitHubOAuth
from auth.keys import load_signing_keys, read_client_secret
from auth.state import PendingLogins, StateSigner, derive_state_key
from auth.views import (
    Refusal,
    make_callback_view,
    make_login_view,
    make_logout_view,
    make_query_view,
    text,
)
from sdk.customers import Customers

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(cfg: AuthConfig, *, session: requests.Session | None = None) -> Flask:
    """The edge-auth WSGI app for ``cfg``; reads its secrets now (:class:`ConfigError`)."""
    keys = load_signing_keys(cfg.secrets_dir)
    oauth = OAuthSetup(cfg, session or requests.Session())
    oauth.current()  # logs now when sign-in is not configured
    customers = None
    if cfg.validate_customers:
        customers = Customers(path=cfg.customers_path or None, url=cfg.customers_url or None)
    signer = StateSigner(derive_state_key(keys.private_pem))
    pending = PendingLogins()

    app = Flask(__name__)
    app.add_url_rule(
        "/login", "login",
        make_login_view(cfg, signer, pending, oauth.current),
    )  # fmt: skip
    app.add_url_rule(
        "/callback", "callback",
        make_callback_view(cfg, signer, pending, oauth.current, customers, keys),
    )  # fmt: skip
    app.add_url_rule("/q/", "query", make_query_view(cfg, keys.public_key), strict_slashes=False)
    app.add_url_rule("/logout", "logout", make_logout_view(cfg))
    app.add_url_rule("/healthz", "healthz", lambda: text(200, "OK"))

    @app.errorhandler(Refusal)
    def refused(refusal: Refusal) -> Response:
        return refusal.page()

    return app


class OAuthSetup:
    """The GitHub OAuth app as configured now: the client secret is read again whenever
    its file changes, so storing the real one (``ofc secret create oauth-client-secret``)
    takes effect at the next sign-in, without restarting edge-auth."""

    def __init__(self, cfg: AuthConfig, session: requests.Session) -> None:
        self.cfg = cfg
        self.session = session
        self._seen: tuple[float, int] | None = None
        self._answer: tuple[GitHubOAuth | None, str] = (None, "")

    def current(self) -> tuple[GitHubOAuth | None, str]:
        """(the OAuth client, "") or (None, why sign-in is not configured)."""
        path = self.cfg.secrets_dir / CLIENT_SECRET
        try:
            stat = path.stat()
            seen = (stat.st_mtime, stat.st_size)
        except OSError:
            seen = (0.0, -1)
        if seen != self._seen:
            self._seen = seen
            self._answer = self._configure()
            if self._answer[1]:
                log.warning("%s /login answers 503 until then.", self._answer[1])
        return self._answer

    def _configure(self) -> tuple[GitHubOAuth | None, str]:
        cfg = self.cfg
        if not cfg.client_id:
            return None, (
                "Sign-in with GitHub needs an OAuth app: the operator sets OFC_OAUTH_CLIENT_ID "
                f"to its client id and stores its client secret as the secret {CLIENT_SECRET}."
            )
        client_secret = read_client_secret(cfg.secrets_dir)
        if not client_secret:
            return None, (
                "Sign-in with GitHub needs the OAuth app's client secret: the operator stores "
                f"it as the secret {CLIENT_SECRET} (ofc secret create {CLIENT_SECRET} ...)."
            )
        return GitHubOAuth(
            github_url=cfg.github_url, api_url=cfg.github_api_url, client_id=cfg.client_id,
            client_secret=client_secret, redirect_uri=cfg.callback_url,
            timeout=cfg.github_timeout, session=self.session,
        ), ""  # fmt: skip
