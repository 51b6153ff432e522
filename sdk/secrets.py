"""Reading platform secrets from the mounted secret directory.

OpenFaaS mounts each secret as a file named after it under ``/var/openfaas/secrets``
(``secret_mount_path`` overrides that, as the embedded runtime does). Values are
whitespace-trimmed, as faas-provider does.
"""

from __future__ import annotations

from pathlib import Path

from sdk.openfaas import validate_name

__all__ = ["DEFAULT_MOUNT_PATH", "SecretMissing", "read_secret"]

DEFAULT_MOUNT_PATH = "/var/openfaas/secrets"


class SecretMissing(LookupError):
    """The secret file does not exist; the message names the secret, never a value."""


def read_secret(name: str, mount_path: str | Path = DEFAULT_MOUNT_PATH) -> str:
    """The trimmed value of secret ``name``; :class:`SecretMissing` when it is not mounted."""
    validate_name("secret name", name)
    path = Path(mount_path) / name
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise SecretMissing(f"secret {name!r} is not mounted in {mount_path}") from None
