"""The fake GitHub's OAuth web flow: it must refuse what GitHub refuses, or edge-auth's
tests prove less than they claim."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
import requests

from tests.auth.conftest import query
from tests.fakes.github import FakeGitHub, OAuthApp, _redirect_allowed
from tests.fakes.github import (
    fake_github as _fake_github,  # noqa: F401  (registers the fake_github fixture)
)

CALLBACK = "http://example.com/path"


def authorize(fake: FakeGitHub, app: OAuthApp, **params: str) -> requests.Response:
    return requests.get(
        f"{fake.url}/login/oauth/authorize",
        params={"client_id": app.client_id, "state": "s1", **params},
        allow_redirects=False,
        timeout=5,
    )


def code_for(fake: FakeGitHub, app: OAuthApp, **params: str) -> str:
    answer = authorize(fake, app, **params)
    assert answer.status_code == 302, answer.text
    return query(answer.headers["Location"])["code"]


def exchange(fake: FakeGitHub, app: OAuthApp, code: str, **fields: str) -> dict[str, str]:
    answer = requests.post(
        f"{fake.url}/login/oauth/access_token",
        data={
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "code": code,
            **fields,
        },
        headers={"Accept": "application/json"},
        timeout=5,
    )
    assert answer.status_code == 200  # GitHub answers refusals with 200 and "error"
    return dict(answer.json())


# GitHub's own examples ("Redirect URLs" in "Authorizing OAuth apps") for CALLBACK.
@pytest.mark.parametrize(
    ("redirect_uri", "allowed"),
    [
        ("http://example.com/path", True),
        ("http://example.com/path/subdir/other", True),
        ("http://oauth.example.com/path", True),
        ("http://oauth.example.com/path/subdir/other", True),
        ("http://example.com/bar", False),
        ("http://example.com/", False),
        ("http://example.com:8080/path", False),
        ("http://oauth.example.com:8080/path", False),
        ("http://example.org", False),
        ("http://example.com/pathology", False),
        ("https://example.com/path", False),
    ],
)
def test_redirect_uri_follows_githubs_rules(redirect_uri: str, allowed: bool) -> None:
    assert _redirect_allowed(CALLBACK, redirect_uri) is allowed


def test_authorize_redirects_back_with_a_code_and_the_state(fake_github: FakeGitHub) -> None:
    app = fake_github.add_oauth_app(CALLBACK)
    fake_github.sign_in("alice")

    answer = authorize(fake_github, app, redirect_uri=CALLBACK + "/cb", scope="read:org")

    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(CALLBACK + "/cb?")
    assert query(location)["state"] == "s1"
    assert len(query(location)["code"]) == 20


def test_authorize_with_an_unknown_client_id_is_404(fake_github: FakeGitHub) -> None:
    fake_github.sign_in("alice")

    answer = authorize(fake_github, OAuthApp("nobody", "x", CALLBACK))

    assert answer.status_code == 404


def test_authorize_with_a_foreign_redirect_uri_goes_to_the_callback_with_an_error(
    fake_github: FakeGitHub,
) -> None:
    app = fake_github.add_oauth_app(CALLBACK)
    fake_github.sign_in("alice")

    answer = authorize(fake_github, app, redirect_uri="http://evil.example/path")

    location = answer.headers["Location"]
    assert location.startswith(CALLBACK + "?")
    assert query(location)["error"] == "redirect_uri_mismatch"
    assert "code" not in query(location)


def test_authorize_without_a_signed_in_user_shows_githubs_sign_in_page(
    fake_github: FakeGitHub,
) -> None:
    app = fake_github.add_oauth_app(CALLBACK)

    answer = authorize(fake_github, app)

    assert answer.status_code == 200
    assert "Location" not in answer.headers


def test_code_exchanges_once_for_a_token_that_reads_the_user(fake_github: FakeGitHub) -> None:
    app = fake_github.add_oauth_app(CALLBACK)
    fake_github.sign_in("alice", orgs=["acme", "beta"], name="Alice Example")
    code = code_for(fake_github, app, scope="read:org")

    first = exchange(fake_github, app, code)
    second = exchange(fake_github, app, code)

    assert first["token_type"] == "bearer" and first["scope"] == "read:org"
    assert first["access_token"] == fake_github.oauth_tokens[0]
    assert second["error"] == "bad_verification_code"
    headers = {"Authorization": f"Bearer {first['access_token']}"}
    user = requests.get(f"{fake_github.url}/user", headers=headers, timeout=5).json()
    assert (user["login"], user["name"]) == ("alice", "Alice Example")
    orgs = requests.get(
        f"{fake_github.url}/user/orgs",
        params={"per_page": 1, "page": 2},
        headers=headers,
        timeout=5,
    ).json()
    assert [o["login"] for o in orgs] == ["beta"]
    assert fake_github.violations == []


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"client_secret": "wrong"}, "incorrect_client_credentials"),
        ({"redirect_uri": "http://example.com/path/other"}, "redirect_uri_mismatch"),
        ({"code": "0123456789abcdef0123"}, "bad_verification_code"),
    ],
    ids=["client-secret", "redirect-uri", "code"],
)
def test_code_exchange_refusals(
    fake_github: FakeGitHub, fields: dict[str, str], error: str
) -> None:
    app = fake_github.add_oauth_app(CALLBACK)
    fake_github.sign_in("alice")
    code = code_for(fake_github, app, redirect_uri=CALLBACK)

    given = {"redirect_uri": CALLBACK, **fields}
    answer = exchange(fake_github, app, given.pop("code", code), **given)

    assert answer["error"] == error
    assert "access_token" not in answer
    assert fake_github.oauth_tokens == []


def test_code_exchange_answers_a_form_without_accept_json(fake_github: FakeGitHub) -> None:
    app = fake_github.add_oauth_app(CALLBACK)
    fake_github.sign_in("alice")
    code = code_for(fake_github, app)

    answer = requests.post(
        f"{fake_github.url}/login/oauth/access_token",
        data={"client_id": app.client_id, "client_secret": app.client_secret, "code": code},
        timeout=5,
    )

    assert parse_qs(answer.text)["access_token"] == fake_github.oauth_tokens
    [recorded] = fake_github.calls("POST", "/login/oauth/access_token")
    assert recorded.json["client_secret"] == "***"
