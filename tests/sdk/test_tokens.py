"""sdk.tokens: the session JWT is ES256 only, bound to issuer and audience, and expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from sdk.tokens import InvalidToken, generate_keypair, issue_token, verify_token

ISS, AUD = "http://auth.system.localhost:8000", "http://system.localhost:8000"


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_keypair()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**over: object) -> dict[str, object]:
    return {"sub": "alice", "orgs": [], "iss": ISS, "aud": AUD, "iat": 1, "exp": 2**40, **over}


def test_round_trip_gives_the_identity(keys: tuple[bytes, bytes]) -> None:
    token = issue_token(keys[0], login="Alice", name="Alice A", orgs=["Acme"], issuer=ISS, audience=AUD)
    who = verify_token(token, keys[1], issuer=ISS, audience=AUD)
    assert (who.login, who.name, who.orgs) == ("Alice", "Alice A", ("Acme",))
    assert who.owners() == {"alice", "acme"}
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert set(claims) == {"sub", "name", "orgs", "iss", "aud", "iat", "nbf", "exp"}


def test_alg_none_is_refused(keys: tuple[bytes, bytes]) -> None:
    head = _b64(b'{"alg":"none","typ":"JWT"}')
    forged = f"{head}.{_b64(json.dumps(_claims()).encode())}."
    with pytest.raises(InvalidToken):
        verify_token(forged, keys[1], issuer=ISS, audience=AUD)


def test_hs256_signed_with_the_public_key_is_refused(keys: tuple[bytes, bytes]) -> None:
    head = _b64(b'{"alg":"HS256","typ":"JWT"}')
    body = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(keys[1], f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        verify_token(f"{head}.{body}.{_b64(mac)}", keys[1], issuer=ISS, audience=AUD)


@pytest.mark.parametrize(("issuer", "audience"), [("http://evil", AUD), (ISS, "http://evil")])
def test_wrong_issuer_or_audience_is_refused(keys: tuple[bytes, bytes], issuer: str, audience: str) -> None:
    token = issue_token(keys[0], login="a", name="a", orgs=[], issuer=issuer, audience=audience)
    with pytest.raises(InvalidToken):
        verify_token(token, keys[1], issuer=ISS, audience=AUD)


def test_expired_token_is_refused(keys: tuple[bytes, bytes]) -> None:
    token = issue_token(keys[0], login="a", name="a", orgs=[], issuer=ISS, audience=AUD, ttl=60, now=1000)
    assert verify_token(token, keys[1], issuer=ISS, audience=AUD, now=1050).login == "a"
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, keys[1], issuer=ISS, audience=AUD, now=1000 + 60 + 31)


def test_a_token_from_another_key_is_refused(keys: tuple[bytes, bytes]) -> None:
    other_private, _ = generate_keypair()
    token = issue_token(other_private, login="a", name="a", orgs=[], issuer=ISS, audience=AUD)
    with pytest.raises(InvalidToken):
        verify_token(token, keys[1], issuer=ISS, audience=AUD)
