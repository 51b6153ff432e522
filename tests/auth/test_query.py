"""``/q/``: the router's question "does this request carry a valid session?", answered
from the token alone; forged, expired and misdirected tokens are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from sdk.tokens import COOKIE_NAME, generate_keypair, issue_token
from tests.auth.conftest import AUDIENCE, ISSUER, EdgeAuth, set_cookies

StartEdgeAuth = Callable[..., EdgeAuth]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "alice", "name": "Alice", "orgs": ["acme-org"], "iss": ISSUER, "aud": AUDIENCE,
        "iat": now, "nbf": now, "exp": now + 3600, **override,
    }  # fmt: skip


def hand_made(header: dict[str, Any], body: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def token(private_key: bytes, **override: Any) -> str:
    fields: dict[str, Any] = {
        "login": "alice", "name": "Alice", "orgs": ["acme-org"], "issuer": ISSUER,
        "audience": AUDIENCE, **override,
    }  # fmt: skip
    return issue_token(private_key, **fields)


def tampered(auth: EdgeAuth) -> str:
    """A real token whose claims were changed after signing."""
    header, _, signature = token(auth.private_key).split(".")
    return f"{header}.{b64(json.dumps(claims(sub='mallory')).encode())}.{signature}"


FORGERIES: dict[str, Callable[[EdgeAuth], str]] = {
    "alg-none": lambda a: hand_made({"alg": "none", "typ": "JWT"}, claims(), lambda _: b""),
    "hs256-signed-with-the-public-key": lambda a: hand_made(
        {"alg": "HS256", "typ": "JWT"},
        claims(),
        lambda data: hmac.new(a.public_key, data, hashlib.sha256).digest(),
    ),
    "wrong-issuer": lambda a: token(a.private_key, issuer="http://auth.system.evil.example"),
    "wrong-audience": lambda a: token(a.private_key, audience="http://alice.localhost:8000"),
    "expired": lambda a: token(a.private_key, ttl=3600, now=time.time() - 7200),
    "signed-by-another-key": lambda a: token(generate_keypair()[0]),
    "claims-changed-after-signing": tampered,
    "not-a-jwt": lambda a: "not.a.jwt",
}


def test_query_with_the_session_cookie_answers_200_with_the_user(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("Alice", orgs=["acme-org", "beta"])
    session = set_cookies(auth.sign_in())[COOKIE_NAME].value
    exp = json.loads(base64.urlsafe_b64decode(session.split(".")[1] + "=="))["exp"]

    answer = auth.get("/q/", params={"r": "/function/dashboard/"})

    assert answer.status_code == 200
    assert answer.headers["X-OFC-User"] == "Alice"
    assert answer.headers["X-OFC-Orgs"] == "acme-org,beta"
    assert answer.headers["X-OFC-Expires"] == str(exp)
    assert answer.headers["Cache-Control"] == "no-store"


def test_query_with_a_bearer_token_answers_200(edge_auth: EdgeAuth) -> None:
    auth = edge_auth

    answer = auth.get("/q/", headers={"Authorization": f"Bearer {token(auth.private_key)}"})

    assert answer.status_code == 200
    assert answer.headers["X-OFC-User"] == "alice"


def test_query_without_the_trailing_slash_answers_too(edge_auth: EdgeAuth) -> None:
    auth = edge_auth

    answer = auth.get("/q", headers={"Cookie": f"{COOKIE_NAME}={token(auth.private_key)}"})

    assert answer.status_code == 200


def test_query_without_a_token_answers_401(edge_auth: EdgeAuth) -> None:
    auth = edge_auth

    answer = auth.get("/q/", params={"r": "/dashboard/"})

    assert answer.status_code == 401
    assert "X-OFC-User" not in answer.headers
    assert "sign in" in answer.text


@pytest.mark.parametrize("carrier", ["cookie", "bearer"])
@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
def test_query_with_a_forged_token_answers_401(
    edge_auth: EdgeAuth, forge: Callable[[EdgeAuth], str], carrier: str
) -> None:
    auth = edge_auth
    forged = forge(auth)
    header = (
        {"Cookie": f"{COOKIE_NAME}={forged}"}
        if carrier == "cookie"
        else {"Authorization": f"Bearer {forged}"}
    )

    answer = auth.get("/q/", headers=header)

    assert answer.status_code == 401
    assert answer.text.startswith("invalid session")
    assert forged not in answer.text
    assert "X-OFC-User" not in answer.headers
