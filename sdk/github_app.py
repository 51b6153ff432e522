"""Calling GitHub's REST API as a GitHub App installation.

A GitHub App authenticates in two steps (GitHub docs, "Authenticating as a GitHub App
installation"): a short-lived RS256 JWT signed with the App's private key proves the App,
and ``POST /app/installations/{id}/access_tokens`` trades it for an installation token
(valid one hour) that the repository calls carry::

    app = GitHubApp("12345", pem)
    app.request("POST", "/repos/alice/fn/statuses/<sha>", installation_id=42,
                json={"state": "success", "context": "stack-deploy"})

Tokens are cached per installation until five minutes before they expire. Server errors
(5xx), rate limits (403/429 with ``Retry-After``, or ``x-ratelimit-remaining: 0`` with
``x-ratelimit-reset``) and connection failures are retried, at most ``max_attempts``
times and ``max_wait`` seconds of waiting in all. Failures raise :class:`GitHubError`
with GitHub's own message; tokens, JWTs and keys never appear in a message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import jwt as pyjwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = ["API_VERSION", "GitHubApp", "GitHubError"]

log = logging.getLogger(__name__)

API_VERSION = "2022-11-28"
ACCEPT = "application/vnd.github+json"
USER_AGENT = "ofc-python-github-app"

# GitHub refuses a JWT whose exp is more than 10 minutes ahead; iat is back-dated 60 s
# for clock drift, as GitHub's docs recommend, so 540 s ahead stays well inside.
JWT_BACKDATE = 60
JWT_LIFETIME = 540
# An installation token lives one hour; renew it this long before it runs out so a
# request never starts with a token about to expire.
TOKEN_RENEW_BEFORE = 300
_RETRYABLE_RATE_LIMIT = (403, 429)


class GitHubError(Exception):
    """GitHub refused a request, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message


def _load_key(private_key_pem: str) -> RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        # cryptography's own message is about the bytes it was given: keep it out.
        raise ValueError("the GitHub App private key is not an unencrypted PEM key") from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("the GitHub App private key must be an RSA key (GitHub signs with RS256)")
    return key


def _parse_expiry(text: str) -> float:
    """Seconds since the epoch of GitHub's ``expires_at`` (``2016-07-11T22:14:10Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _github_message(response: requests.Response) -> str:
    """GitHub's ``message`` (plus validation ``errors``) from an error response."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason or "no message"
    if not isinstance(body, dict):
        return str(body)[:500]
    message = str(body.get("message") or response.reason or "no message")
    errors = body.get("errors")
    if errors:
        message += f": {errors}"
    return message[:1000]


class GitHubApp:
    """One GitHub App: JWTs, cached installation tokens, and retried API calls.

    ``clock`` (seconds since the epoch) and ``sleep`` are injectable for tests;
    ``max_attempts`` bounds the tries of one call and ``max_wait`` the seconds spent
    waiting between them (a ``Retry-After`` beyond what is left ends the retries).
    """

    def __init__(
        self,
        app_id: str,
        private_key_pem: str,
        *,
        api_url: str = "https://api.github.com",
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 3,
        max_wait: float = 10.0,
        backoff: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        if not str(app_id).strip():
            raise ValueError("the GitHub App id is empty")
        if not api_url.startswith(("https://", "http://")):
            raise ValueError(f"GitHub API URL {api_url!r} must start with https:// or http://")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.app_id = str(app_id).strip()
        self.api_url = api_url.rstrip("/")
        self._key = _load_key(private_key_pem)
        self._session = session or requests.Session()
        self._clock = clock
        self._sleep = sleep
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.backoff = backoff
        self.timeout = timeout
        self._tokens: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()

    # -- authentication ----------------------------------------------------------------------
    def jwt(self) -> str:
        """A JWT for the App itself: RS256, ``iss`` = App id, valid from 60 s ago for 9 minutes."""
        now = int(self._clock())
        claims = {"iss": self.app_id, "iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME}
        return pyjwt.encode(claims, self._key, algorithm="RS256")

    def installation_token(self, installation_id: int) -> str:
        """A token for ``installation_id``, minted or reused from the cache until near expiry."""
        now = self._clock()
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached and now < cached[1] - TOKEN_RENEW_BEFORE:
                return cached[0]
        path = f"/app/installations/{int(installation_id)}/access_tokens"
        response = self._send("POST", path, {"Authorization": f"Bearer {self.jwt()}"})
        try:
            body = response.json()
            token = str(body["token"])
            expires = _parse_expiry(str(body["expires_at"]))
        except (ValueError, KeyError, TypeError):
            raise GitHubError(
                response.status_code, f"POST {path}: GitHub answered without token/expires_at"
            ) from None
        with self._lock:
            self._tokens[installation_id] = (token, expires)
        log.info(
            "minted a token for installation %d (expires %s)", installation_id, body["expires_at"]
        )
        return token

    def forget_token(self, installation_id: int) -> None:
        """Drop the cached token (e.g. after GitHub answered 401 to it)."""
        with self._lock:
            self._tokens.pop(installation_id, None)

    # -- requests ------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        installation_id: int,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> requests.Response:
        """Send ``method path`` as the installation; the 2xx response, else :class:`GitHubError`.

        A 401 drops the cached token and tries once more with a fresh one: tokens are
        revoked when an installation's permissions change.
        """
        for fresh in (False, True):
            token = self.installation_token(installation_id)
            try:
                return self._send(
                    method, path, {"Authorization": f"Bearer {token}"}, json=json, params=params
                )
            except GitHubError as exc:
                if exc.status != 401 or fresh:
                    raise
                log.warning(
                    "GitHub refused the cached token of installation %d; minting a new one",
                    installation_id,
                )
                self.forget_token(installation_id)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        path: str,
        auth: dict[str, str],
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> requests.Response:
        headers = {
            "Accept": ACCEPT,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
            **auth,
        }
        what = f"{method} {path}"
        waited = 0.0
        error = GitHubError(0, f"{what}: not sent")
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._session.request(
                    method,
                    self.api_url + path,
                    headers=headers,
                    json=json,
                    params=dict(params or {}),
                    timeout=self.timeout,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                kind = (
                    "did not answer in time"
                    if isinstance(exc, requests.Timeout)
                    else "cannot be reached"
                )
                error = GitHubError(0, f"{what}: GitHub at {self.api_url} {kind}")
                delay: float | None = self.backoff * 2 ** (attempt - 1)
            else:
                if 200 <= response.status_code < 300:
                    return response
                error = GitHubError(response.status_code, f"{what}: {_github_message(response)}")
                delay = self._retry_delay(response, attempt)
            if delay is None or attempt == self.max_attempts:
                raise error
            if waited + delay > self.max_wait:
                log.warning("%s: not retrying, GitHub asks to wait %.1f s", what, delay)
                raise error
            log.warning("%s failed (%s); retry %d in %.2f s", what, error, attempt, delay)
            self._sleep(delay)
            waited += delay
        raise error

    def _retry_delay(self, response: requests.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or ``None`` when it is final."""
        status = response.status_code
        retry_after = response.headers.get("Retry-After")
        if status in _RETRYABLE_RATE_LIMIT:
            if retry_after is not None:
                return _seconds(retry_after)
            if response.headers.get("x-ratelimit-remaining") == "0":
                reset = response.headers.get("x-ratelimit-reset", "")
                try:
                    return max(0.0, float(reset) - self._clock())
                except ValueError:
                    return None
            return None  # a plain 403 is a permission problem: retrying will not help
        if status >= 500:
            if retry_after is not None:
                return _seconds(retry_after)
            return self.backoff * 2 ** (attempt - 1)
        return None


def _seconds(retry_after: str) -> float | None:
    # GitHub sends delta-seconds; an HTTP date or garbage means we cannot honour it.
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return None
