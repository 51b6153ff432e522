"""HMAC signatures: GitHub's webhook headers and the platform's own internal ones.

All comparisons are constant-time, over the exact bytes received (never re-serialised
JSON). GitHub's ``X-Hub-Signature-256`` is preferred; the legacy SHA-1
``X-Hub-Signature`` is accepted only when the SHA-256 header is absent.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = [
    "CLOUD_SIGNATURE",
    "BUILD_SIGNATURE",
    "sign",
    "verify",
    "verify_github",
]

CLOUD_SIGNATURE = "X-Cloud-Signature"
BUILD_SIGNATURE = "X-Build-Signature"
GITHUB_SHA256 = "X-Hub-Signature-256"
GITHUB_SHA1 = "X-Hub-Signature"

_ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}


def sign(body: bytes, secret: str | bytes, algorithm: str = "sha256") -> str:
    """The header value ``<algorithm>=<hex HMAC of body>``.

    >>> sign(b"Hello, World!", "It's a Secret to Everybody")
    'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17'
    """
    key = secret.encode() if isinstance(secret, str) else secret
    return f"{algorithm}={hmac.new(key, body, _ALGORITHMS[algorithm]).hexdigest()}"


def verify(
    body: bytes, header: str | None, secret: str | bytes, *, allowed: tuple[str, ...] = ("sha256",)
) -> bool:
    """True when ``header`` is ``<algorithm>=<hex>`` for ``body`` with an ``allowed`` algorithm."""
    if not header or "=" not in header or not secret:
        return False
    algorithm, _, digest = header.strip().partition("=")
    if algorithm not in allowed or algorithm not in _ALGORITHMS:
        return False
    return hmac.compare_digest(sign(body, secret, algorithm), f"{algorithm}={digest.lower()}")


def verify_github(body: bytes, headers: Mapping[str, str], secret: str | bytes) -> bool:
    """Check a GitHub webhook delivery: SHA-256 header first, SHA-1 only when it is absent."""
    sha256 = headers.get(GITHUB_SHA256)
    if sha256:
        return verify(body, sha256, secret, allowed=("sha256",))
    return verify(body, headers.get(GITHUB_SHA1), secret, allowed=("sha1",))
