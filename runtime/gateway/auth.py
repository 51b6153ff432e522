"""Basic auth for ``/system/*``, with credentials read from secret files.

As on OpenFaaS, the files are ``basic-auth-user`` and ``basic-auth-password`` in the
secrets directory; the embedded runtime generates them at first start (user
``admin``, a random password) so nothing ships with a default password.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
from pathlib import Path

USER_FILE = "basic-auth-user"
PASSWORD_FILE = "basic-auth-password"
CHALLENGE = [(b"www-authenticate", b'Basic realm="Restricted"')]


def ensure_credentials(secrets_dir: Path) -> tuple[str, str]:
    """Read the gateway credentials, creating them (mode 0600) when absent."""
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    user_path, password_path = secrets_dir / USER_FILE, secrets_dir / PASSWORD_FILE
    if not user_path.exists():
        _write_private(user_path, "admin")
    if not password_path.exists():
        _write_private(password_path, secrets.token_urlsafe(24))
    return user_path.read_text().strip(), password_path.read_text().strip()


def _write_private(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")


class BasicAuth:
    """Checks an ``Authorization`` header against one user and password in constant time."""

    def __init__(self, user: str, password: str) -> None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._expected = f"Basic {token}".encode()

    def allows(self, header: bytes | None) -> bool:
        return hmac.compare_digest(header or b"", self._expected)
