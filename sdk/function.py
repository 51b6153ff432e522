"""What every pipeline function's handler needs: answers, body parsing, signature checks.

A handler stays a thin translation (``handle(event, context)`` → a typed core), and
every stage answers the same way: 401 for a bad signature, 400 for a malformed body
saying what is wrong, 202 for accepted or ignored work, 200 when done, 5xx only for
real faults.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sdk.config import ConfigError
from sdk.openfaas import RecordError
from sdk.secrets import SecretMissing, read_secret
from sdk.signing import CLOUD_SIGNATURE, verify

__all__ = [
    "answer",
    "json_answer",
    "parse_json",
    "check_cloud_signature",
    "read_signed",
    "configured",
    "Rejected",
]

R = TypeVar("R")
C = TypeVar("C")


class Rejected(Exception):
    """A request a stage refuses: ``status`` and a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def answer(status: int, text: str) -> dict[str, Any]:
    """A plain-text python3-http answer."""
    return {
        "statusCode": status,
        "body": text.rstrip("\n") + "\n",
        "headers": {"Content-Type": "text/plain; charset=utf-8"},
    }


def json_answer(status: int, payload: Any) -> dict[str, Any]:
    """A JSON python3-http answer."""
    return {
        "statusCode": status,
        "body": json.dumps(payload),
        "headers": {"Content-Type": "application/json"},
    }


def parse_json(body: bytes) -> Any:
    """Decode a JSON body; :class:`Rejected` 400 saying why it is not JSON."""
    if not body.strip():
        raise Rejected(400, "request body is empty: expected JSON")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(400, f"request body is not valid JSON: {exc}") from None


def check_cloud_signature(body: bytes, headers: Any, payload_secret: str) -> None:
    """:class:`Rejected` 401 unless ``X-Cloud-Signature`` signs ``body`` with the payload secret."""
    if not verify(body, headers.get(CLOUD_SIGNATURE), payload_secret):
        raise Rejected(401, f"missing or invalid {CLOUD_SIGNATURE}")


def rejected_from(exc: RecordError) -> Rejected:
    """A record that does not parse is the caller's mistake: 400 with the reason."""
    return Rejected(400, str(exc))


def read_signed(
    body: bytes, headers: Any, record_type: type[R], secret_mount_path: str
) -> tuple[R, str]:
    """The request's record and the payload secret, once ``X-Cloud-Signature`` checks out.

    Raises :class:`Rejected`: 500 when the payload secret is not mounted (the platform is
    misconfigured), 401 for a bad signature, 400 for a body that is not the record.
    """
    try:
        secret = read_secret("payload-secret", secret_mount_path)
    except SecretMissing as exc:
        raise Rejected(500, f"the platform is misconfigured: {exc}") from None
    check_cloud_signature(body, headers, secret)
    try:
        record = record_type.from_json(parse_json(body))  # type: ignore[attr-defined]
    except RecordError as exc:
        raise Rejected(400, str(exc)) from None
    return record, secret


def configured(
    make: Callable[[], C],
    name: str,
    *,
    errors: tuple[type[Exception], ...] = (ConfigError,),
) -> C | Exception:
    """Build a function's core once at import; a startup error in ``errors`` (a bad
    setting, a secret not mounted) is kept, not raised, so every call can answer 500
    saying what to fix instead of the import failing."""
    try:
        return make()
    except errors as exc:
        logging.getLogger(name).error("configuration error: %s", exc)
        return exc
