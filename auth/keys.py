"""The secrets edge-auth reads at start from the platform's secret directory.

``jwt-private-key`` signs session tokens and is required: without it nothing could be
issued or checked, so the service does not start. ``jwt-public-key``, the copy readers
verify with, is checked against it: a mismatch would make every reader refuse every
token. ``oauth-client-secret`` may be absent or still ``ofc up``'s placeholder; sign-in
then answers 503 saying so. Messages name files, never values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from auth.config import CLIENT_SECRET, CLIENT_SECRET_PLACEHOLDER, PRIVATE_KEY, PUBLIC_KEY
from sdk.config import ConfigError

__all__ = ["SigningKeys", "load_signing_keys", "read_client_secret"]


@dataclass(frozen=True)
class SigningKeys:
    """The token key pair: the private key as PEM (to sign), the public key parsed."""

    private_pem: bytes
    public_key: ec.EllipticCurvePublicKey  # parsed once: /q/ checks a signature per call


def load_signing_keys(secrets_dir: Path) -> SigningKeys:
    """The key pair from ``jwt-private-key`` (the public half derived from it)."""
    path = secrets_dir / PRIVATE_KEY
    try:
        private_pem = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"the token signing key {path} does not exist: `ofc up` creates it "
            "(or set OFC_AUTH_SECRETS_DIR to where the platform's secrets are)"
        ) from None
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"{path} must be an EC P-256 key (ES256)")
    public_path = secrets_dir / PUBLIC_KEY
    if public_path.exists():
        try:
            stored = serialization.load_pem_public_key(public_path.read_bytes())
        except (ValueError, TypeError):
            raise ConfigError(f"{public_path} is not a PEM public key") from None
        if stored != key.public_key():
            raise ConfigError(
                f"{public_path} is not the public half of {path}: the router and the "
                "dashboard would refuse every session; store the matching pair"
            )
    return SigningKeys(private_pem=private_pem, public_key=key.public_key())


def read_client_secret(secrets_dir: Path) -> str:
    """The OAuth app's client secret; empty when absent, empty or still the placeholder."""
    try:
        value = (secrets_dir / CLIENT_SECRET).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    return "" if value == CLIENT_SECRET_PLACEHOLDER else value
