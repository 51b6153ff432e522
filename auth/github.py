"""GitHub's OAuth web flow, as edge-auth uses it: the authorize URL, the code exchange, and
who the user is (``GET /user`` and ``GET /user/orgs``).

The access token lives only inside :meth:`GitHubOAuth.sign_in`: it is not returned, stored,
logged or put in an error message. Errors say what failed in words a user or an operator
can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import requests

__all__ = ["GitHubError", "GitHubOAuth", "GitHubUser", "SignInRefused"]

SCOPE = "read:org"  # enough to list the user's organisations, including private memberships
API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
ORGS_PER_PAGE = 100
MAX_ORG_PAGES = 10  # 1000 organisations is far beyond anyone's


class GitHubError(Exception):
    """GitHub could not be reached, failed, or refused the platform's own credentials (502)."""


class SignInRefused(Exception):
    """GitHub refused this sign-in (the user declined, or the code expired); start again."""


@dataclass(frozen=True)
class GitHubUser:
    """Who signed in, as GitHub spells it."""

    login: str
    name: str
    orgs: tuple[str, ...]


class GitHubOAuth:
    """One OAuth app on one GitHub (``github_url`` for sign-in, ``api_url`` for the API)."""

    def __init__(
        self,
        *,
        github_url: str,
        api_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        timeout: float,
        session: requests.Session | None = None,
    ) -> None:
        self.github_url = github_url
        self.api_url = api_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.timeout = timeout
        self.session = session or requests.Session()

    def authorize_url(self, state: str) -> str:
        """Where to send the browser to sign in; GitHub comes back to ``redirect_uri``."""
        query = urlencode(
            {
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": SCOPE,
                "state": state,
                "allow_signup": "false",
            }
        )
        return f"{self.github_url}/login/oauth/authorize?{query}"

    def sign_in(self, code: str) -> GitHubUser:
        """Exchange ``code`` for a token, use it to learn who the user is, and drop it."""
        token = self._exchange(code)
        user = self._api(token, "/user")
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            raise GitHubError("GitHub's /user answer has no login")
        login = user["login"]
        name = user.get("name") if isinstance(user.get("name"), str) else ""
        return GitHubUser(login=login, name=name or login, orgs=self._orgs(token))

    def _exchange(self, code: str) -> str:
        try:
            response = self.session.post(
                f"{self.github_url}/login/oauth/access_token",
                data={
                    "client_id": self.client_id,
                    "client_secret": self._client_secret,
                    "code": code,
                    "redirect_uri": self.redirect_uri,
                },
                headers={"Accept": "application/json"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise GitHubError(
                f"cannot reach GitHub to finish the sign-in ({type(exc).__name__})"
            ) from None
        body = _json(response, "token endpoint")
        # GitHub reports a refused exchange with 200 and an "error" field.
        error = body.get("error") if isinstance(body, dict) else None
        if error == "bad_verification_code":
            raise SignInRefused("GitHub's sign-in code has expired or was already used")
        if error == "incorrect_client_credentials":
            raise GitHubError(
                "GitHub refused the platform's OAuth client id or secret "
                "(OFC_OAUTH_CLIENT_ID, secret oauth-client-secret)"
            )
        if error == "redirect_uri_mismatch":
            raise GitHubError(
                f"GitHub refused the callback URL {self.redirect_uri}: the OAuth app's "
                "callback URL must be this one"
            )
        if error:
            raise GitHubError(f"GitHub refused the sign-in: {str(error)[:100]}")
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise GitHubError("GitHub's token endpoint answered without an access token")
        return token

    def _orgs(self, token: str) -> tuple[str, ...]:
        orgs: list[str] = []
        for page in range(1, MAX_ORG_PAGES + 1):
            batch = self._api(token, f"/user/orgs?per_page={ORGS_PER_PAGE}&page={page}")
            if not isinstance(batch, list):
                raise GitHubError("GitHub's /user/orgs answer is not a list")
            orgs.extend(
                o["login"] for o in batch if isinstance(o, dict) and isinstance(o.get("login"), str)
            )
            if len(batch) < ORGS_PER_PAGE:
                break
        return tuple(orgs)

    def _api(self, token: str, path: str) -> Any:
        try:
            response = self.session.get(
                self.api_url + path,
                headers={**API_HEADERS, "Authorization": f"Bearer {token}"},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise GitHubError(f"cannot reach GitHub's API ({type(exc).__name__})") from None
        return _json(response, f"API {path.split('?')[0]}")


def _json(response: requests.Response, what: str) -> Any:
    if response.status_code != 200:
        raise GitHubError(f"GitHub's {what} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise GitHubError(f"GitHub's {what} did not answer JSON") from None
