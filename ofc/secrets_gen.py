"""The platform's secrets for a production install, generated once into files.

``ofc secrets generate --dir DIR`` writes one file per secret (mode 0600, in a 0700
folder) and keeps the files already there, so running it again changes nothing and an
operator can put their own value in a file (a gateway password OpenFaaS already has, the
GitHub App's key) before or after. It then prints, if asked, the commands that store the
files as Kubernetes secrets or OpenFaaS secrets: they name the files (``--from-file``),
never the values. A value reaches standard output only with ``--show-values``.

Where each secret goes (``docs/production.md``): the platform's functions read theirs in
the functions namespace (``faas-cli secret create``); edge-auth, the builder and the
router read theirs in the core namespace (``kubectl create secret``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import string
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from auth.config import CLIENT_SECRET_PLACEHOLDER
from sdk.tokens import generate_keypair

__all__ = [
    "FORMATS",
    "SECRETS",
    "GeneratedSecrets",
    "SecretSpec",
    "SecretsError",
    "commands",
    "generate",
]

FORMATS = ("files", "kubectl", "faas-cli")
FUNCTIONS = "functions"  # the namespace of the platform's functions (openfaas-fn)
CORE = "core"  # the namespace of the gateway, the router, edge-auth, the builder (openfaas)
DIR_MODE = 0o700
FILE_MODE = 0o600
_ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class SecretSpec:
    """One platform secret: a file named ``name``, and who reads it."""

    name: str
    purpose: str
    namespaces: tuple[str, ...]  # FUNCTIONS and/or CORE
    generate: Callable[[], bytes] | None  # None: the operator supplies it (a file in the dir)


def _token() -> bytes:
    return secrets.token_hex(32).encode()


def _password() -> bytes:
    # Letters and digits only: the value is often typed or passed as an argument
    # (faas-cli login, mc), where a leading "-" or a shell special would bite.
    return "".join(secrets.choice(_ALNUM) for _ in range(32)).encode()


SECRETS: tuple[SecretSpec, ...] = (
    SecretSpec(
        "github-webhook-secret",
        "HMAC key of GitHub's deliveries: paste it as the GitHub App's webhook secret",
        (FUNCTIONS,),
        _token,
    ),
    SecretSpec(
        "payload-secret",
        "HMAC key of every call between the platform's functions and to the builder",
        (FUNCTIONS, CORE),
        _token,
    ),
    SecretSpec(
        "basic-auth-user",
        "the OpenFaaS gateway's admin user (also the gateway's own secret basic-auth)",
        (FUNCTIONS,),
        lambda: b"admin",
    ),
    SecretSpec(
        "basic-auth-password",
        "the OpenFaaS gateway's admin password (also the gateway's own secret basic-auth)",
        (FUNCTIONS,),
        _password,
    ),
    SecretSpec(
        "jwt-private-key",
        "edge-auth's ES256 key that signs session tokens",
        (CORE,),
        None,  # generated with its public half, see generate()
    ),
    SecretSpec(
        "jwt-public-key",
        "the public half, for readers of session tokens (the dashboard)",
        (FUNCTIONS, CORE),
        None,
    ),
    SecretSpec(
        "oauth-client-secret",
        "the GitHub App's OAuth client secret: replace the placeholder with it",
        (CORE,),
        lambda: CLIENT_SECRET_PLACEHOLDER.encode(),
    ),
    SecretSpec(
        "s3-access-key",
        "pipeline-log's S3 access key (log_storage: s3); give MinIO the same",
        (FUNCTIONS,),
        lambda: secrets.token_hex(10).encode(),
    ),
    SecretSpec(
        "s3-secret-key",
        "pipeline-log's S3 secret key (log_storage: s3); give MinIO the same",
        (FUNCTIONS,),
        _password,
    ),
    SecretSpec(
        "private-key",
        "the GitHub App's private key (PEM, downloaded from the App's settings)",
        (FUNCTIONS,),
        None,  # only GitHub can make it: --github-private-key FILE copies it in
    ),
)

# The gateway's own secret in the core namespace, as the OpenFaaS chart names it: the
# router mounts it to list functions. Same two files as the functions' copies.
GATEWAY_SECRET = "basic-auth"
GATEWAY_KEYS = ("basic-auth-user", "basic-auth-password")


@dataclass(frozen=True)
class GeneratedSecrets:
    """What :func:`generate` did: names created, names kept, names still missing."""

    dir: Path
    created: tuple[str, ...]
    kept: tuple[str, ...]
    missing: tuple[str, ...]  # operator-supplied secrets with no file yet


class SecretsError(Exception):
    """The folder or a supplied file cannot be used; the message says which."""


def generate(
    dir: Path, github_private_key: Path | None = None, owner: int | None = None
) -> GeneratedSecrets:
    """Write every missing secret into ``dir``; existing files are kept as they are.

    ``owner``: a uid to give the folder and its files to (the services' user when they
    are bind-mounted into containers, as with faasd); the modes stay 0700 and 0600.
    """
    dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if not dir.is_dir():
        raise SecretsError(f"{dir} is not a folder")
    os.chmod(dir, DIR_MODE)  # whatever the umask or an older run left
    created: list[str] = []
    kept: list[str] = []
    missing: list[str] = []
    private, public = dir / "jwt-private-key", dir / "jwt-public-key"
    if not private.exists():
        # A new pair: both files written together, so the halves always match (an old
        # public key alone is replaced).
        private_pem, public_pem = generate_keypair()
        public.unlink(missing_ok=True)
        _write(private, private_pem)
        _write(public, public_pem)
        created += [private.name, public.name]
    for spec in SECRETS:
        path = dir / spec.name
        if spec.name in created:
            continue
        if path.exists():
            if spec.name == "private-key" and github_private_key is not None:
                _same_key(path, github_private_key)
            kept.append(spec.name)
            os.chmod(path, FILE_MODE)
            continue
        value = _value_for(spec, dir, github_private_key)
        if value is None:
            missing.append(spec.name)
            continue
        _write(path, value)
        created.append(spec.name)
    if owner is not None:
        for path in (dir, *(dir / name for name in (*created, *kept))):
            os.chown(path, owner, -1)
    return GeneratedSecrets(dir, tuple(created), tuple(kept), tuple(missing))


def _value_for(spec: SecretSpec, dir: Path, github_private_key: Path | None) -> bytes | None:
    if spec.generate is not None:
        return spec.generate()
    if spec.name == "jwt-public-key":  # the private key was kept: derive its public half
        return _public_half(dir / "jwt-private-key")
    if spec.name == "private-key" and github_private_key is not None:
        try:
            pem = github_private_key.read_bytes()
        except OSError as exc:
            raise SecretsError(f"cannot read {github_private_key}: {exc.strerror}") from None
        if b"PRIVATE KEY-----" not in pem:
            raise SecretsError(f"{github_private_key} is not a PEM private key")
        return pem
    return None


def _same_key(path: Path, given: Path) -> None:
    """Refuse to keep an existing ``private-key`` silently when another one is given."""
    try:
        same = path.read_bytes().strip() == given.read_bytes().strip()
    except OSError as exc:
        raise SecretsError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if not same:
        raise SecretsError(
            f"{path} already holds another GitHub App key: remove it to store {given} instead"
        )


def _public_half(private_path: Path) -> bytes | None:
    """The public key of an existing ``jwt-private-key`` (kept by an earlier run)."""
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        raise SecretsError(f"{private_path} is not an unencrypted PEM private key") from None
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write(path: Path, value: bytes) -> None:
    # O_EXCL: never overwrite, and the mode is set at creation, before any byte is written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(value)


def commands(
    fmt: str,
    dir: Path,
    names: Iterable[str],
    *,
    core_namespace: str = "openfaas",
    functions_namespace: str = "openfaas-fn",
) -> list[str]:
    """Shell commands storing the secrets in ``names`` from their files in ``dir``.

    ``kubectl``: every secret with ``kubectl create secret generic ... --from-file``
    (piped through ``kubectl apply``, so running them again updates instead of failing);
    ``faas-cli``: the functions' secrets with ``faas-cli secret create --from-file``, the
    core namespace's still with kubectl (faas-cli only reaches the functions namespace).
    The values stay in the files: no command carries one.
    """
    if fmt not in ("kubectl", "faas-cli"):
        raise ValueError(f"no commands for format {fmt!r}")
    present = set(names)
    out: list[str] = []
    for spec in SECRETS:
        if spec.name not in present:
            continue
        file = dir / spec.name
        for ns in spec.namespaces:
            if ns == FUNCTIONS and fmt == "faas-cli":
                out.append(
                    f"faas-cli secret create {spec.name} --from-file {shlex.quote(str(file))}"
                    f" || faas-cli secret update {spec.name} --from-file {shlex.quote(str(file))}"
                )
            else:
                namespace = functions_namespace if ns == FUNCTIONS else core_namespace
                out.append(_kubectl(spec.name, namespace, [(spec.name, file)]))
    if present.issuperset(GATEWAY_KEYS):
        out.append(_kubectl(GATEWAY_SECRET, core_namespace, [(k, dir / k) for k in GATEWAY_KEYS]))
    return out


def _kubectl(name: str, namespace: str, files: list[tuple[str, Path]]) -> str:
    sources = " ".join(f"--from-file={key}={shlex.quote(str(path))}" for key, path in files)
    return (
        f"kubectl create secret generic {name} -n {namespace} {sources}"
        " --dry-run=client -o yaml | kubectl apply -f -"
    )


# -- command line (registered by ofc/cli.py) -----------------------------------------------------
def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``ofc secrets generate`` on the CLI's subcommand parser."""
    group = sub.add_parser("secrets", help="the platform's secrets for OpenFaaS (production)")
    group_sub = group.add_subparsers(dest="secrets_command", required=True)
    gen = group_sub.add_parser(
        "generate",
        help="write every missing secret into a folder; print how to store them",
        description=__doc__.split("\n\n")[1],
    )
    gen.add_argument(
        "--dir", default="ofc-secrets", help="folder of secret files (default: ./ofc-secrets)"
    )
    gen.add_argument(
        "--format",
        choices=FORMATS,
        default="files",
        help="files: only write them; kubectl / faas-cli: also print the commands storing them",
    )
    gen.add_argument(
        "--github-private-key", help="the GitHub App's private key (PEM) to copy in as private-key"
    )
    gen.add_argument(
        "--owner", type=int, help="uid to own the folder and files (faasd: 10001, the services')"
    )
    gen.add_argument("--namespace", default="openfaas", help="core namespace (default: openfaas)")
    gen.add_argument("--functions-namespace", default="openfaas-fn", help="default: openfaas-fn")
    gen.add_argument(
        "--show-values",
        action="store_true",
        help="also print NAME=VALUE for one-line secrets (careful: they reach the terminal)",
    )
    gen.set_defaults(func=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    from .local import CliError

    dir = Path(args.dir).expanduser()
    key = Path(args.github_private_key).expanduser() if args.github_private_key else None
    try:
        result = generate(dir, github_private_key=key, owner=args.owner)
    except (SecretsError, OSError) as exc:
        raise CliError(str(exc)) from None
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if result.created:
        say(f"created in {dir}: {', '.join(result.created)} (files mode 0600)")
    if result.kept:
        say(f"kept as they were: {', '.join(result.kept)}")
    for name in result.missing:
        spec = next(s for s in SECRETS if s.name == name)
        say(f"missing: {name}: {spec.purpose}; put it in {dir / name} and run this again")
    present = [s.name for s in SECRETS if (dir / s.name).exists()]
    if args.format != "files":
        for line in commands(
            args.format,
            dir.resolve(),
            present,
            core_namespace=args.namespace,
            functions_namespace=args.functions_namespace,
        ):
            print(line)
    if args.show_values:
        for name in present:
            value = (dir / name).read_text(encoding="utf-8", errors="replace").strip()
            print(f"{name}={value}" if "\n" not in value else f"{name}=<PEM in {dir / name}>")
    return 0
