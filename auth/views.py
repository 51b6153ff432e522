"""edge-auth's endpoints, one factory each, taking only what the endpoint needs.

``/login`` starts a GitHub sign-in, ``/callback`` finishes it and sets the session cookie,
``/q/`` answers the router's "may this request pass?", ``/logout`` clears the cookie.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from flask import Response, redirect, request

from auth.config import AuthConfig
from auth.github import GitHubError, GitHubOAuth, GitHubUser, SignInRefused
from auth.keys import SigningKeys
from auth.pages import page
from auth.redirects import BadReturnUrl, safe_return_url
from auth.state import STATE_TTL, LoginState, PendingLogins, StateError, StateSigner
from sdk.customers import Customers
from sdk.tokens import COOKIE_NAME, InvalidToken, issue_token, verify_token

__all__ = [
    "HEADER_EXPIRES",
    "HEADER_ORGS",
    "HEADER_USER",
    "LOGIN_COOKIE",
    "make_callback_view",
    "make_login_view",
    "make_logout_view",
    "make_query_view",
]

log = logging.getLogger(__name__)

View = Callable[[], Response]

# What a 200 from /q/ tells the router about the user, and until when it may cache that.
HEADER_USER = "X-OFC-User"
HEADER_ORGS = "X-OFC-Orgs"  # comma-separated organisation logins
HEADER_EXPIRES = "X-OFC-Expires"  # the token's exp, unix seconds
# Ties a sign-in to the browser that started it; edge-auth's own host and callback only.
LOGIN_COOKIE = "ofc_auth_login"


class Refusal(Exception):
    """A request refused with a page: ``status``, a title and a sentence the user can act on."""

    def __init__(self, status: int, title: str, message: str, retry_url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.retry_url = retry_url  # where "start again" leads, when it helps

    def page(self) -> Response:
        link = (
            ("Sign in again", f"/login?{urlencode({'r': self.retry_url})}")
            if self.retry_url
            else None
        )
        return page(self.status, self.title, self.message, link)


def return_url(cfg: AuthConfig, r: str) -> str:
    """The absolute URL ``r`` stands for, or the dashboard without one; 400 when refused."""
    if not r:
        return cfg.default_return_url
    try:
        return safe_return_url(r, domain=cfg.domain, base=cfg.audience)
    except BadReturnUrl as exc:
        raise Refusal(400, "Not a page of this platform", str(exc)) from None


def make_login_view(
    cfg: AuthConfig,
    signer: StateSigner,
    pending: PendingLogins,
    oauth_setup: Callable[[], tuple[GitHubOAuth | None, str]],
) -> View:
    """``GET /login?r=<return URL>``: 302 to GitHub's authorize page with a fresh state."""

    def login() -> Response:
        oauth, not_configured = oauth_setup()
        if oauth is None:
            raise Refusal(503, "Sign-in is not configured", not_configured)
        target = return_url(cfg, request.args.get("r", ""))
        state, started = signer.issue(target)
        pending.add(started)
        response = redirect(oauth.authorize_url(state), 302)
        response.set_cookie(
            LOGIN_COOKIE, started.nonce, max_age=int(STATE_TTL), path="/callback",
            secure=cfg.scheme == "https", httponly=True, samesite="Lax",
        )  # fmt: skip
        log.info("sign-in started, to return to %s", urlsplit(target).netloc)
        return response

    return login


def make_callback_view(
    cfg: AuthConfig,
    signer: StateSigner,
    pending: PendingLogins,
    oauth_setup: Callable[[], tuple[GitHubOAuth | None, str]],
    customers: Customers | None,
    keys: SigningKeys,
) -> View:
    """``GET /callback?code=&state=``: check the state, exchange the code, set the cookie,
    302 to the return URL the state carries."""

    def callback() -> Response:
        try:
            response = finish()
        except Refusal as refusal:
            response = refusal.page()
        response.delete_cookie(
            LOGIN_COOKIE, path="/callback", secure=cfg.scheme == "https", httponly=True,
            samesite="Lax",
        )  # fmt: skip
        return response

    def finish() -> Response:
        oauth, not_configured = oauth_setup()
        if oauth is None:
            raise Refusal(503, "Sign-in is not configured", not_configured)
        started = check_state()
        retry = started.return_url
        error = request.args.get("error", "")
        if error == "access_denied":
            raise Refusal(403, "Sign-in cancelled", "GitHub says the request was declined.", retry)
        if error:
            log.warning("GitHub refused a sign-in: %s", error[:100])
            raise Refusal(
                502, "GitHub refused the sign-in", f"GitHub answered {error[:100]!r}.", retry
            )
        code = request.args.get("code", "")
        if not code:
            raise Refusal(400, "Sign-in incomplete", "GitHub sent no code back.", retry)
        try:
            user = oauth.sign_in(code)
        except SignInRefused as exc:
            raise Refusal(400, "Sign-in expired", f"{exc}: please sign in again.", retry) from None
        except GitHubError as exc:
            log.error("sign-in failed: %s", exc)
            raise Refusal(
                502,
                "GitHub could not be asked who you are",
                f"{exc}. Try again in a minute.",
                retry,
            ) from None
        if not allowed(user):
            log.info(
                "refused %s: neither the account nor its organisations are customers", user.login
            )
            raise Refusal(
                403, "Not a customer",
                f"{user.login} may not use this platform: neither the account nor any of its "
                "organisations is on the customers list.",
            )  # fmt: skip
        token = issue_token(
            keys.private_pem, login=user.login, name=user.name, orgs=user.orgs,
            issuer=cfg.issuer, audience=cfg.audience, ttl=cfg.token_ttl,
        )  # fmt: skip
        response = redirect(started.return_url, 302)
        response.set_cookie(
            COOKIE_NAME, token, max_age=int(cfg.token_ttl), domain=cfg.cookie_domain, path="/",
            secure=cfg.scheme == "https", httponly=True, samesite="Lax",
        )  # fmt: skip
        log.info(
            "signed in %s (organisations: %s), returning to %s",
            user.login, ", ".join(user.orgs) or "none", urlsplit(started.return_url).netloc,
        )  # fmt: skip
        return response

    def check_state() -> LoginState:
        text = request.args.get("state", "")
        if not text:
            raise Refusal(
                400,
                "Sign-in incomplete",
                "The request carries no sign-in state.",
                cfg.default_return_url,
            )
        try:
            started = signer.verify(text)
        except StateError as exc:
            log.info("refused a callback: %s", exc)
            raise Refusal(400, "Sign-in refused", f"{exc}.", cfg.default_return_url) from None
        browser = request.cookies.get(LOGIN_COOKIE, "").encode("utf-8", "replace")
        if not hmac.compare_digest(browser, started.nonce.encode()):
            log.info("refused a callback: the sign-in was started in another browser")
            raise Refusal(
                400, "Sign-in refused",
                "This sign-in was not started in this browser (or its cookies are off).",
                started.return_url,
            )  # fmt: skip
        if not pending.consume(started.nonce):
            log.info("refused a callback: its state was already used")
            raise Refusal(
                400, "Sign-in refused", "This sign-in was already used.", started.return_url
            )
        return started

    def allowed(user: GitHubUser) -> bool:
        if customers is None:
            return True
        return any(customers.allows(name) for name in (user.login, *user.orgs))

    return callback


def make_logout_view(cfg: AuthConfig) -> View:
    """``GET /logout?r=``: clear the session cookie, then 302 to ``r`` or a signed-out page."""

    def logout() -> Response:
        r = request.args.get("r", "")
        if r:
            response = redirect(return_url(cfg, r), 302)
        else:
            response = page(200, "Signed out", "You have signed out of OpenFaaS Cloud.",
                            ("Sign in again", "/login"))  # fmt: skip
        response.delete_cookie(
            COOKIE_NAME, domain=cfg.cookie_domain, path="/", secure=cfg.scheme == "https",
            httponly=True, samesite="Lax",
        )  # fmt: skip
        return response

    return logout


def make_query_view(cfg: AuthConfig, public_key: EllipticCurvePublicKey) -> View:
    """``GET /q/?r=<path>``: 200 with the user's headers when the request carries a valid
    session token (cookie, or ``Authorization: Bearer``), else 401 with a short reason.

    No I/O: one signature check. ``r`` (the path the router is asked about) is not needed:
    the router decides which paths need a session.
    """

    def query() -> Response:
        token = bearer_token() or request.cookies.get(COOKIE_NAME, "")
        if not token:
            return text(401, "no session: sign in first")
        try:
            identity = verify_token(token, public_key, issuer=cfg.issuer, audience=cfg.audience)
        except InvalidToken as exc:
            return text(401, f"invalid session: {exc}")
        response = text(200, "OK")
        response.headers[HEADER_USER] = identity.login
        response.headers[HEADER_ORGS] = ",".join(identity.orgs)
        response.headers[HEADER_EXPIRES] = str(identity.expires)
        return response

    return query


def bearer_token() -> str:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


def text(status: int, body: str) -> Response:
    response = Response(body + "\n", status=status, content_type="text/plain; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response
