"""The platform's session token: an ES256 JWT issued by edge-auth, checked by its readers.

edge-auth signs with the private key (secret ``jwt-private-key``, PEM, EC P-256); the
router's protected paths (through edge-auth's ``/q/``) and the dashboard verify with the
public key (secret ``jwt-public-key``). The token carries who the user is and nothing
else: no GitHub token, ever.

Claims: ``sub`` (GitHub login, as GitHub spells it), ``name``, ``orgs`` (logins of the
user's organisations), ``iss``, ``aud``, ``iat``, ``nbf``, ``exp``. Only ES256 is
accepted when verifying, so ``alg: none`` and an HS256 token "signed" with the public key
are refused, as is a wrong issuer or audience or an expired token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ALGORITHM",
    "COOKIE_NAME",
    "DEFAULT_TTL",
    "Identity",
    "InvalidToken",
    "generate_keypair",
    "issue_token",
    "load_public_key",
    "public_origin",
    "token_audience",
    "token_issuer",
    "verify_token",
]

ALGORITHM = "ES256"
COOKIE_NAME = "openfaas_cloud_token"
DEFAULT_TTL = 48 * 3600.0
LEEWAY = 30.0  # seconds of clock skew tolerated between issuer and reader


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or meant for someone else."""


@dataclass(frozen=True)
class Identity:
    """Who a valid token says the user is."""

    login: str
    name: str
    orgs: tuple[str, ...]
    expires: int

    def owners(self) -> frozenset[str]:
        """Lower-cased logins whose functions this user may see: theirs and their orgs'."""
        return frozenset(o.lower() for o in (self.login, *self.orgs))


def public_origin(scheme: str, host: str, port: int) -> str:
    """``scheme://host[:port]``, the port left out when it is the scheme's default.

    >>> public_origin("http", "system.localhost", 8000)
    'http://system.localhost:8000'
    >>> public_origin("https", "system.example.com", 443)
    'https://system.example.com'
    """
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port == default else f"{scheme}://{host}:{port}"


def token_issuer(scheme: str, domain: str, port: int) -> str:
    """The ``iss`` of session tokens: edge-auth's public origin, ``auth.system.<domain>``."""
    return public_origin(scheme, f"auth.system.{domain}", port)


def token_audience(scheme: str, domain: str, port: int) -> str:
    """The ``aud`` of session tokens: the platform's own origin, ``system.<domain>``."""
    return public_origin(scheme, f"system.{domain}", port)


def generate_keypair() -> tuple[bytes, bytes]:
    """A new EC P-256 key pair as PEM: (private PKCS#8, public SubjectPublicKeyInfo)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def issue_token(
    private_key_pem: bytes,
    *,
    login: str,
    name: str,
    orgs: list[str] | tuple[str, ...],
    issuer: str,
    audience: str,
    ttl: float = DEFAULT_TTL,
    now: float | None = None,
) -> str:
    """A signed token for ``login``, valid for ``ttl`` seconds."""
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": login,
        "name": name,
        "orgs": list(orgs),
        "iss": issuer,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
    }
    return jwt.encode(claims, private_key_pem, algorithm=ALGORITHM)


def load_public_key(public_key_pem: bytes) -> ec.EllipticCurvePublicKey:
    """The public key parsed once, for :func:`verify_token` on a hot path (parsing the PEM
    costs several times the signature check); ``ValueError`` when it is not an EC key."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the token verification key must be an EC public key")
    return key


def verify_token(
    token: str,
    public_key_pem: bytes | ec.EllipticCurvePublicKey,
    *,
    issuer: str,
    audience: str,
    now: float | None = None,
) -> Identity:
    """The identity in ``token``, or :class:`InvalidToken` saying why it is refused.

    The key is PEM, or a key from :func:`load_public_key`.
    """
    if not token:
        raise InvalidToken("no token")
    options = {"require": ["sub", "iss", "aud", "exp", "iat"]}
    try:
        if now is not None:
            # PyJWT reads the clock itself; a fixed "now" is for tests of expiry.
            claims = jwt.decode(
                token, public_key_pem, algorithms=[ALGORITHM], issuer=issuer,
                audience=audience, options={**options, "verify_exp": False},
            )  # fmt: skip
            if claims["exp"] + LEEWAY < now:
                raise jwt.ExpiredSignatureError("Signature has expired")
        else:
            claims = jwt.decode(
                token, public_key_pem, algorithms=[ALGORITHM], issuer=issuer,
                audience=audience, leeway=LEEWAY, options=options,
            )  # fmt: skip
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc) or type(exc).__name__) from None
    orgs = claims.get("orgs") or []
    if not isinstance(claims["sub"], str) or not isinstance(orgs, list):
        raise InvalidToken("malformed claims")
    return Identity(
        login=claims["sub"],
        name=str(claims.get("name") or claims["sub"]),
        orgs=tuple(str(o) for o in orgs),
        expires=int(claims["exp"]),
    )
