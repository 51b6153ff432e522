"""sdk.github_app against the fake GitHub: JWTs, cached installation tokens, bounded retries."""

from __future__ import annotations

import socket
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sdk.github_app import GitHubApp, GitHubError
from tests.fakes.github import FakeGitHub
from tests.fakes.github import (
    fake_github as _fake_github,  # noqa: F401  (registers the fake_github fixture)
)

SHA = "c" * 40
STATUS_PATH = f"/repos/alice/fn/statuses/{SHA}"


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def make_app(fake: FakeGitHub, **kwargs: Any) -> tuple[GitHubApp, list[float]]:
    slept: list[float] = []
    kwargs.setdefault("sleep", slept.append)
    return GitHubApp(fake.app_id, fake.private_key_pem, api_url=fake.url, **kwargs), slept


def post_status(app: GitHubApp, installation_id: int) -> Any:
    return app.request(
        "POST", STATUS_PATH, installation_id, json={"state": "success", "context": "fn"}
    )


# -- JWT and tokens -----------------------------------------------------------------------------
def test_jwt_is_rs256_with_the_app_id_backdated_60s_and_valid_540s(fake_github: FakeGitHub) -> None:
    app, _ = make_app(fake_github, clock=lambda: 1_700_000_000.0)
    token = app.jwt()
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        fake_github.public_key,
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {
        "iss": fake_github.app_id,
        "iat": 1_700_000_000 - 60,
        "exp": 1_700_000_000 + 540,
    }


def test_installation_token_is_minted_with_githubs_headers(fake_github: FakeGitHub) -> None:
    app, _ = make_app(fake_github)
    token = app.installation_token(fake_github.installation_id)
    assert token in fake_github.tokens
    (minted,) = fake_github.calls("POST", "/access_tokens")
    assert minted.headers["Accept"] == "application/vnd.github+json"
    assert minted.headers["X-Github-Api-Version"] == "2022-11-28"
    assert fake_github.violations == []


def test_installation_token_is_cached_per_installation(fake_github: FakeGitHub) -> None:
    fake_github.add_installation(2002)
    app, _ = make_app(fake_github)
    first = app.installation_token(fake_github.installation_id)
    assert app.installation_token(fake_github.installation_id) == first
    assert app.installation_token(2002) != first
    assert len(fake_github.calls("POST", "/access_tokens")) == 2


def test_installation_token_is_renewed_five_minutes_before_it_expires(
    fake_github: FakeGitHub,
) -> None:
    fake_github.token_lifetime = 310  # cached for 10 s, then within the 5-minute margin
    clock = Clock()
    app, _ = make_app(fake_github, clock=clock)
    first = app.installation_token(fake_github.installation_id)
    clock.offset = 5
    assert app.installation_token(fake_github.installation_id) == first
    clock.offset = 11
    assert app.installation_token(fake_github.installation_id) != first
    assert len(fake_github.calls("POST", "/access_tokens")) == 2


def test_request_sends_the_installation_token(fake_github: FakeGitHub) -> None:
    app, _ = make_app(fake_github)
    response = post_status(app, fake_github.installation_id)
    assert response.status_code == 201
    assert fake_github.statuses_for("alice", "fn", SHA)[0]["context"] == "fn"
    assert fake_github.violations == []


def test_request_after_the_token_was_revoked_mints_a_new_one_once(fake_github: FakeGitHub) -> None:
    app, _ = make_app(fake_github)
    post_status(app, fake_github.installation_id)
    fake_github.revoke_tokens()
    assert post_status(app, fake_github.installation_id).status_code == 201
    assert len(fake_github.calls("POST", "/access_tokens")) == 2


def test_token_for_a_foreign_key_raises_401_without_the_jwt(fake_github: FakeGitHub) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    app = GitHubApp(fake_github.app_id, pem, api_url=fake_github.url)
    with pytest.raises(GitHubError) as caught:
        app.installation_token(fake_github.installation_id)
    assert caught.value.status == 401
    assert "could not be decoded" in caught.value.message
    assert "eyJ" not in str(caught.value)


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode(),
    ],
    ids=["garbage", "ec-key"],
)
def test_malformed_private_key_is_a_value_error_without_the_key(pem: str) -> None:
    with pytest.raises(ValueError) as caught:
        GitHubApp("1", pem)
    assert pem not in str(caught.value)
    assert "private key" in str(caught.value)


# -- retries -------------------------------------------------------------------------------------
def test_server_errors_are_retried_with_backoff(fake_github: FakeGitHub) -> None:
    app, slept = make_app(fake_github)
    app.installation_token(fake_github.installation_id)
    fake_github.fail_next(2, status=502, path_contains="/statuses/")
    assert post_status(app, fake_github.installation_id).status_code == 201
    assert slept == [0.5, 1.0]
    assert len(fake_github.calls("POST", "/statuses/")) == 3


def test_server_errors_give_up_after_three_attempts(fake_github: FakeGitHub) -> None:
    app, slept = make_app(fake_github)
    fake_github.fail_next(3, status=500, path_contains="/statuses/")
    with pytest.raises(GitHubError) as caught:
        post_status(app, fake_github.installation_id)
    assert caught.value.status == 500
    assert "Server Error" in caught.value.message
    assert len(fake_github.calls("POST", "/statuses/")) == 3
    assert len(slept) == 2


def test_token_minting_is_retried_too(fake_github: FakeGitHub) -> None:
    app, slept = make_app(fake_github)
    fake_github.fail_next(1, status=503, path_contains="/access_tokens")
    assert app.installation_token(fake_github.installation_id)
    assert slept == [0.5]


@pytest.mark.parametrize(
    "status", [403, 429], ids=["secondary-rate-limit-403", "too-many-requests-429"]
)
def test_rate_limit_with_retry_after_waits_that_long(fake_github: FakeGitHub, status: int) -> None:
    app, slept = make_app(fake_github)
    app.installation_token(fake_github.installation_id)
    fake_github.fail_next(1, status=status, retry_after=2, path_contains="/statuses/")
    assert post_status(app, fake_github.installation_id).status_code == 201
    assert slept == [2.0]


def test_exhausted_rate_limit_waits_until_the_reset(fake_github: FakeGitHub) -> None:
    clock = Clock()
    app, slept = make_app(fake_github, clock=clock)
    app.installation_token(fake_github.installation_id)
    fake_github.rate_limit_next(1, reset_in=3, path_contains="/statuses/")
    assert post_status(app, fake_github.installation_id).status_code == 201
    assert len(slept) == 1 and 2.0 < slept[0] <= 3.0


def test_retry_after_beyond_the_wait_budget_is_not_waited_for(fake_github: FakeGitHub) -> None:
    app, slept = make_app(fake_github, max_wait=5)
    app.installation_token(fake_github.installation_id)
    fake_github.fail_next(1, status=429, retry_after=60, path_contains="/statuses/")
    with pytest.raises(GitHubError) as caught:
        post_status(app, fake_github.installation_id)
    assert caught.value.status == 429
    assert slept == []


def test_plain_403_is_a_permission_error_and_not_retried(fake_github: FakeGitHub) -> None:
    fake_github.add_installation(2002, account="bob")
    app, slept = make_app(fake_github)
    with pytest.raises(GitHubError) as caught:
        post_status(app, 2002)
    assert caught.value.status == 403
    assert "Resource not accessible by integration" in caught.value.message
    assert slept == []


def test_validation_error_is_raised_with_githubs_message_and_not_retried(
    fake_github: FakeGitHub,
) -> None:
    app, slept = make_app(fake_github)
    with pytest.raises(GitHubError) as caught:
        app.request("POST", STATUS_PATH, fake_github.installation_id, json={"state": "done"})
    assert caught.value.status == 422
    assert "state" in caught.value.message
    assert str(caught.value).startswith(f"POST {STATUS_PATH}: ")
    assert slept == []


def test_unreachable_github_raises_status_0_after_bounded_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    slept: list[float] = []
    app = GitHubApp("1", pem, api_url=f"http://127.0.0.1:{port}", sleep=slept.append, timeout=2)
    with pytest.raises(GitHubError) as caught:
        app.installation_token(1)
    assert caught.value.status == 0
    assert "cannot be reached" in caught.value.message
    assert slept == [0.5, 1.0]


def test_single_attempt_does_not_retry(fake_github: FakeGitHub) -> None:
    app, slept = make_app(fake_github, max_attempts=1)
    fake_github.fail_next(1, status=500, path_contains="/access_tokens")
    with pytest.raises(GitHubError):
        app.installation_token(fake_github.installation_id)
    assert slept == []


def test_error_messages_never_carry_the_token(fake_github: FakeGitHub) -> None:
    app, _ = make_app(fake_github)
    token = app.installation_token(fake_github.installation_id)
    fake_github.fail_next(3, status=500, path_contains="/statuses/")
    with pytest.raises(GitHubError) as caught:
        post_status(app, fake_github.installation_id)
    assert token not in str(caught.value)
