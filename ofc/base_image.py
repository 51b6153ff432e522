"""The functions' base image ``ofc/python3-base:bookworm``, built from Debian packages.

No public container registry is reachable here, so the image the template's Dockerfile
starts ``FROM`` is made locally: ``debootstrap --variant=minbase`` of Debian with
python3, python3-venv and ca-certificates, apt's caches emptied, optionally an extra CA
certificate trusted, then ``docker import`` of the root filesystem's tarball.

The tarball is cached in ``~/.cache/ofc/`` (``$XDG_CACHE_HOME/ofc``) under a key of
the suite, the packages and the extra CA, so another engine (a new data root) imports it
in seconds instead of bootstrapping again. The image carries the key as a label: an
image with the same label is reused as it is.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .engine import DOCKER_CLI, log_tail, mounts_under, unmount_under

__all__ = ["BaseImageError", "BaseImageResult", "BaseImageSpec", "ensure_base_image"]

BASE_IMAGE = "ofc/python3-base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
LABEL = "org.ofc.base-image"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBOOTSTRAP_TIMEOUT = 900.0


class BaseImageError(Exception):
    """The base image could not be built or imported; the message says why."""


@dataclass(frozen=True)
class BaseImageSpec:
    """What goes into the image. The mirror is only where packages come from: not in the key."""

    ref: str = BASE_IMAGE
    suite: str = "bookworm"
    packages: tuple[str, ...] = PACKAGES
    mirror: str = DEFAULT_MIRROR
    extra_ca: bytes = b""  # a PEM certificate to trust inside the image, if any

    @property
    def key(self) -> str:
        """Names the root filesystem: same key, same contents (up to Debian's updates)."""
        h = hashlib.sha256()
        for part in (self.suite, ",".join(sorted(self.packages)), self.extra_ca.decode()):
            h.update(part.encode() + b"\0")
        return h.hexdigest()[:16]

    @property
    def labels(self) -> dict[str, str]:
        return {
            f"{LABEL}.key": self.key,
            f"{LABEL}.suite": self.suite,
            f"{LABEL}.packages": ",".join(self.packages),
            f"{LABEL}.extra-ca": "yes" if self.extra_ca else "no",
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra_ca: Path | None = None) -> BaseImageSpec:
        """``OFC_DEBIAN_MIRROR`` overrides the mirror; ``extra_ca`` is a PEM file."""
        mirror = env.get("OFC_DEBIAN_MIRROR", "").strip() or DEFAULT_MIRROR
        try:
            ca = extra_ca.read_bytes() if extra_ca else b""
        except OSError as exc:
            raise BaseImageError(f"cannot read the extra CA certificate: {exc}") from None
        if ca and b"-----BEGIN CERTIFICATE-----" not in ca:
            raise BaseImageError(f"{extra_ca} is not a PEM certificate")
        return cls(mirror=mirror, extra_ca=ca)


@dataclass(frozen=True)
class BaseImageResult:
    """How the image came to be in the engine."""

    ref: str
    how: str  # "reused", "imported from the cached rootfs" or "built with debootstrap"
    seconds: float
    tarball: Path | None

    def describe(self) -> str:
        if self.how == "reused":
            return f"{self.ref}: reused (already in the engine, same packages)"
        return f"{self.ref}: {self.how} in {self.seconds:.1f} s"


def default_cache_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/ofc``, else ``~/.cache/ofc``."""
    root = env.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(root).expanduser() / "ofc"


def _docker(docker_host: str, docker_cli: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, "DOCKER_HOST": docker_host}

    def run(
        *args: str, stdin: object = None, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [docker_cli, *args], env=env, stdin=stdin, capture_output=True, text=True,
                timeout=timeout, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BaseImageError(
                f"`docker {args[0]}` did not finish within {timeout:g} s ({docker_host})"
            ) from None
        except OSError as exc:
            raise BaseImageError(f"cannot run the docker client {docker_cli}: {exc}") from None

    return run


def image_key(docker_host: str, ref: str, docker_cli: str = DOCKER_CLI) -> str | None:
    """The base-image key label of ``ref`` in the engine; "" for an image without it,
    None when there is no such image."""
    proc = _docker(docker_host, docker_cli)(
        "image", "inspect", "--format", f'{{{{index .Config.Labels "{LABEL}.key"}}}}', ref
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip().replace("<no value>", "")


def ensure_base_image(
    docker_host: str,
    spec: BaseImageSpec | None = None,
    *,
    force: bool = False,
    cache_dir: Path | None = None,
    docker_cli: str = DOCKER_CLI,
    progress: Callable[[str], None] = lambda line: None,
) -> BaseImageResult:
    """Make ``spec.ref`` exist in the engine at ``docker_host`` and return how.

    Reused when the image there has the same key label (unless ``force``); otherwise
    imported from the cached root filesystem tarball, which is built first when
    missing (or when ``force``). An imported image must pass :func:`check_image`.
    """
    spec = spec or BaseImageSpec()
    started = time.monotonic()
    if not force and image_key(docker_host, spec.ref, docker_cli) == spec.key:
        return BaseImageResult(spec.ref, "reused", time.monotonic() - started, None)
    cache_dir = cache_dir or default_cache_dir()
    tarball, built = rootfs_tarball(spec, cache_dir, force=force, progress=progress)
    import_tarball(docker_host, spec, tarball, docker_cli)
    try:
        check_image(docker_host, spec.ref, docker_cli)
    except BaseImageError:
        # Tagged with its key, a broken image would be "reused" by every later call.
        _docker(docker_host, docker_cli)("image", "rm", "--force", spec.ref)
        raise
    how = "built with debootstrap" if built else "imported from the cached rootfs"
    return BaseImageResult(spec.ref, how, time.monotonic() - started, tarball)


# -- the root filesystem ----------------------------------------------------------------------------
def rootfs_tarball(
    spec: BaseImageSpec,
    cache_dir: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[Path, bool]:
    """(the cached tarball for ``spec``, whether it was built now). One build at a
    time per key on this machine: a second caller waits and then uses it."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"python3-base-{spec.suite}-{spec.key}.tar"
    with open(cache_dir / f".{tarball.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.is_file() and not force:
            return tarball, False
        progress(
            f"building the base image's root filesystem: debootstrap {spec.suite} from "
            f"{spec.mirror} (about a minute)"
        )
        build = Path(tempfile.mkdtemp(prefix="rootfs-", dir=cache_dir))
        try:
            rootfs = build / "rootfs"
            _debootstrap(spec, rootfs, build / "debootstrap.log")
            _clean(rootfs)
            if spec.extra_ca:
                add_extra_ca(rootfs, spec.extra_ca)
            partial = build / "rootfs.tar"
            _run(
                ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
                "tar of the root filesystem",
            )
            partial.replace(tarball)  # atomic: a reader never sees half a tarball
        finally:
            _remove(build)
    return tarball, True


def _debootstrap(spec: BaseImageSpec, rootfs: Path, log: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise BaseImageError("debootstrap is not installed (apt-get install debootstrap)")
    argv = [
        "debootstrap", "--variant=minbase", f"--include={','.join(spec.packages)}",
        spec.suite, str(rootfs), spec.mirror,
    ]  # fmt: skip
    with open(log, "wb") as out:
        try:
            proc = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, timeout=DEBOOTSTRAP_TIMEOUT,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BaseImageError(
                f"debootstrap took over {DEBOOTSTRAP_TIMEOUT:g} s; end of its log:\n{log_tail(log, 15)}"
            ) from None
    if proc.returncode != 0:
        # debootstrap keeps its own detail in the target's debootstrap/debootstrap.log.
        detail = rootfs / "debootstrap" / "debootstrap.log"
        raise BaseImageError(
            f"debootstrap failed (exit {proc.returncode}); end of its log:\n{log_tail(log, 15)}"
            + (f"\n{log_tail(detail, 15)}" if detail.is_file() else "")
        )


def _clean(rootfs: Path) -> None:
    """Drop what only the build needed: downloaded packages, apt's lists and caches, logs."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "var/log/*.log", "var/log/apt/*"):  # fmt: skip
        for path in rootfs.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)


def add_extra_ca(rootfs: Path, pem: bytes) -> None:
    """Trust ``pem`` inside ``rootfs``, as Debian does a local CA: update-ca-certificates."""
    target = rootfs / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    (target / "ofc-extra-ca.crt").write_bytes(pem)
    _run(["chroot", str(rootfs), "update-ca-certificates"], "update-ca-certificates in the rootfs")


def _remove(build: Path) -> None:
    # debootstrap mounts /proc and /sys in the target; a failed run may leave them.
    # Never delete through a mount.
    unmount_under([build])
    if mounts_under([build]):
        raise BaseImageError(f"{build} still has mounts; not deleting it")
    shutil.rmtree(build, ignore_errors=True)


# -- the image --------------------------------------------------------------------------------------
def import_tarball(docker_host: str, spec: BaseImageSpec, tarball: Path, docker_cli: str) -> None:
    """``docker import`` the tarball as ``spec.ref`` with its environment and labels.
    The image the tag pointed at before is removed when nothing else uses it."""
    docker = _docker(docker_host, docker_cli)
    before = docker("image", "inspect", "--format", "{{.Id}}", spec.ref).stdout.strip()
    changes = ["ENV LANG=C.UTF-8", f"ENV PATH={IMAGE_PATH}", 'CMD ["python3"]']
    changes += [f'LABEL {key}="{value}"' for key, value in spec.labels.items()]
    with open(tarball, "rb") as stdin:
        proc = docker(
            "import", *(arg for c in changes for arg in ("--change", c)), "-", spec.ref,
            stdin=stdin, timeout=600.0,
        )  # fmt: skip
    if proc.returncode != 0:
        raise BaseImageError(f"docker import of {tarball} failed: {proc.stderr.strip()}")
    if before and before != proc.stdout.strip():
        docker("image", "rm", before)  # best effort: a container may still use it


def check_image(docker_host: str, ref: str, docker_cli: str = DOCKER_CLI) -> None:
    """Fail unless ``python3 -m venv`` works in a throwaway container of ``ref``."""
    script = (
        "set -e; python3 -m venv /tmp/venv; "
        "/tmp/venv/bin/python -c 'import sys; assert sys.prefix == \"/tmp/venv\"'; "
        "/tmp/venv/bin/pip --version >/dev/null"
    )
    proc = _docker(docker_host, docker_cli)(
        "run", "--rm", "--network", "none", ref, "sh", "-c", script, timeout=120.0
    )
    if proc.returncode != 0:
        raise BaseImageError(
            f"{ref}: python3 -m venv does not work in the image (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-1000:]}"
        )


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BaseImageError(f"{what} failed: {proc.stderr.strip()[-1000:]}")
