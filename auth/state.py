"""The OAuth ``state``: a signed, expiring, single-use ticket for one sign-in.

``/login`` issues a state carrying a random nonce, the return URL and an expiry, signed
with HMAC-SHA256, and remembers the nonce as pending; the browser also gets the nonce in a
cookie of edge-auth's own host. ``/callback`` accepts the state only when the signature is
right, it has not expired, the browser's cookie holds the same nonce (so a sign-in started
by someone else cannot be finished in this browser) and the nonce is still pending, which
it stops being at that moment: a replayed state is refused before any code is exchanged.

The signing key is derived from the token signing key, so it needs no file of its own
and changes when that key does. Pending nonces live in this process's memory: a restart
only means a sign-in in progress has to start again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginState", "PendingLogins", "StateError", "StateSigner", "derive_state_key"]

STATE_TTL = 600.0  # GitHub's codes last 10 minutes too
MAX_PENDING = 10_000  # beyond this the oldest sign-ins in progress are forgotten


class StateError(ValueError):
    """The state is forged, malformed, expired, already used or not this browser's."""


@dataclass(frozen=True)
class LoginState:
    """What a state carries: the nonce, where to return, and until when it is valid."""

    nonce: str
    return_url: str
    expires: int


def derive_state_key(private_key_pem: bytes) -> bytes:
    """A key for signing states, derived from the token signing key (and only usable here)."""
    return hmac.new(private_key_pem, b"ofc edge-auth oauth state v1", hashlib.sha256).digest()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateSigner:
    """Signs and checks states: ``base64url(json).base64url(hmac-sha256)``."""

    def __init__(
        self, key: bytes, *, ttl: float = STATE_TTL, clock: Callable[[], float] = time.time
    ):
        self._key = key
        self._ttl = ttl
        self._clock = clock

    def issue(self, return_url: str) -> tuple[str, LoginState]:
        """A new state for a sign-in that returns to ``return_url``, and what it carries."""
        login = LoginState(
            nonce=secrets.token_urlsafe(24),
            return_url=return_url,
            expires=int(self._clock() + self._ttl),
        )
        payload = json.dumps(
            {"n": login.nonce, "r": login.return_url, "exp": login.expires}, separators=(",", ":")
        ).encode()
        return f"{_b64encode(payload)}.{_b64encode(self._sign(payload))}", login

    def verify(self, state: str) -> LoginState:
        """What ``state`` carries once its signature and expiry are checked; :class:`StateError`."""
        encoded, _, signature = state.partition(".")
        try:
            payload = _b64decode(encoded)
            given = _b64decode(signature)
        except (binascii.Error, ValueError):
            raise StateError("the sign-in state is malformed") from None
        # Verify before parsing: nothing unsigned is read.
        if not signature or not hmac.compare_digest(given, self._sign(payload)):
            raise StateError("the sign-in state is not one this service issued")
        try:
            fields = json.loads(payload)
            login = LoginState(str(fields["n"]), str(fields["r"]), int(fields["exp"]))
        except (ValueError, KeyError, TypeError):
            raise StateError("the sign-in state is malformed") from None
        if login.expires < self._clock():
            raise StateError("the sign-in took longer than 10 minutes")
        return login

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


class PendingLogins:
    """Nonces of sign-ins in progress; each can be consumed once, until it expires."""

    def __init__(self, *, limit: int = MAX_PENDING, clock: Callable[[], float] = time.time) -> None:
        self._limit = limit
        self._clock = clock
        self._expiry: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, login: LoginState) -> None:
        """Remember ``login``'s nonce as pending."""
        with self._lock:
            self._drop_expired()
            self._expiry[login.nonce] = login.expires
            while len(self._expiry) > self._limit:
                self._expiry.popitem(last=False)

    def consume(self, nonce: str) -> bool:
        """True, once, for a pending nonce; False when unknown, used or expired."""
        with self._lock:
            expires = self._expiry.pop(nonce, None)
        return expires is not None and expires >= self._clock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _drop_expired(self) -> None:
        now = self._clock()
        # Insertion order is expiry order (one TTL for all), so expired ones are in front.
        while self._expiry:
            nonce, expires = next(iter(self._expiry.items()))
            if expires >= now:
                break
            del self._expiry[nonce]
