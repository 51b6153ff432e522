"""Secrets for functions, as ``/system/secrets`` manages them.

Each secret is one file under ``<root>/<name>`` (mode 0600). Values are written and
read back only to hand them to a function replica as a file; no API ever returns
them.
"""

from __future__ import annotations

import os
from pathlib import Path

from sdk.openfaas import validate_name

from .provider import ProviderError, SecretNotFound

__all__ = ["SecretStore", "SecretExists"]


class SecretExists(ProviderError):
    status = 409


class SecretStore:
    """A directory of secret files, one per name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)

    def names(self) -> list[str]:
        """Every secret's name, sorted."""
        return sorted(
            p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")
        )

    def exists(self, name: str) -> bool:
        return (self.root / validate_name("secret name", name)).is_file()

    def create(self, name: str, value: bytes) -> None:
        """Store a new secret; :class:`SecretExists` if the name is taken."""
        if self.exists(name):
            raise SecretExists(f"secret {name!r} already exists: update it with PUT")
        self._write(name, value)

    def update(self, name: str, value: bytes) -> None:
        """Replace a secret's value; :class:`SecretNotFound` if absent."""
        if not self.exists(name):
            raise SecretNotFound(f"secret {name!r} not found")
        self._write(name, value)

    def delete(self, name: str) -> None:
        """Remove a secret; :class:`SecretNotFound` if absent."""
        if not self.exists(name):
            raise SecretNotFound(f"secret {name!r} not found")
        (self.root / name).unlink()

    def read(self, name: str) -> bytes:
        """A secret's value, for materialising it into a replica's secret directory."""
        if not self.exists(name):
            raise SecretNotFound(f"secret {name!r} not found")
        return (self.root / name).read_bytes()

    def _write(self, name: str, value: bytes) -> None:
        tmp = self.root / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(value)
        os.replace(tmp, self.root / name)
