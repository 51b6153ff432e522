"""The functions' base image in the session's engine: Python runs, venv works, and a
second ensure_base_image reuses the image instead of importing it again."""

from __future__ import annotations

import datetime
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ofc.base_image import (
    BaseImageSpec,
    add_extra_ca,
    default_cache_dir,
    ensure_base_image,
    image_key,
)
from tests.containers import Engine
from tests.helpers import OFC

pytestmark = pytest.mark.containers


def run(engine: Engine, image: str, script: str) -> str:
    return engine.docker("run", "--rm", "--network", "none", image, "sh", "-c", script).stdout


def test_base_image_exists_and_runs_python3(engine: Engine):
    assert engine.image_exists(engine.base_image)
    out = run(
        engine, engine.base_image, "python3 -c 'import sys, ssl; print(sys.version_info[:2])'"
    )
    assert out.strip() == "(3, 11)"  # bookworm's python3


def test_base_image_makes_virtualenvs_with_pip(engine: Engine):
    out = run(
        engine,
        engine.base_image,
        "python3 -m venv /tmp/v && /tmp/v/bin/pip --version && /tmp/v/bin/python -c 'import sys; print(sys.prefix)'",
    )
    assert out.startswith("pip ") and out.strip().endswith("/tmp/v")


@pytest.fixture
def scratch_ref(engine: Engine) -> Iterator[str]:
    """A tag of its own, so the engine's real base image is never replaced."""
    ref = f"ofc-test/python3-base:{uuid.uuid4().hex[:12]}"
    yield ref
    engine.docker("image", "rm", ref, check=False)


def test_ensure_base_image_replaces_an_unlabelled_image_then_reuses_it(
    engine: Engine, scratch_ref: str, tmp_path: Path
):
    (tmp_path / "marker").write_text("not a base image\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(tmp_path / "marker", arcname="marker")
    engine.docker("import", str(tmp_path / "rootfs.tar"), scratch_ref)
    assert image_key(engine.docker_host, scratch_ref) == ""
    spec = BaseImageSpec(ref=scratch_ref)

    first = ensure_base_image(engine.docker_host, spec)
    assert first.how in ("imported from the cached rootfs", "built with debootstrap")
    assert image_key(engine.docker_host, scratch_ref) == spec.key
    # Debian's CA bundle is there; apt's package lists and downloads are not.
    out = run(engine, scratch_ref, "test -s /etc/ssl/certs/ca-certificates.crt && ! test -e /marker && "
                                   "find /var/lib/apt/lists /var/cache/apt -type f -name '*deb*' | wc -l")  # fmt: skip
    assert out.strip() == "0"

    second = ensure_base_image(engine.docker_host, spec)
    assert second.how == "reused" and second.tarball is None
    assert "reused" in second.describe()


def test_cli_base_image_says_reused(engine: Engine):
    if image_key(engine.docker_host, engine.base_image) != BaseImageSpec().key:
        pytest.skip("the engine's base image was not built by `ofc base-image`")
    proc = subprocess.run([OFC, "base-image", "--docker-host", engine.docker_host],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"{engine.base_image}: reused (already in the engine, same packages)\n"


def make_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ofc extra CA test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_extra_ca_joins_the_rootfs_ca_bundle(tmp_path: Path):
    # On a copy of the cached root filesystem: a build of its own would take a minute.
    tarball = default_cache_dir() / f"python3-base-bookworm-{BaseImageSpec().key}.tar"
    if os.geteuid() != 0 or not tarball.is_file():
        pytest.skip("needs root and the cached base rootfs (make base-image)")
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    subprocess.run(["tar", "-C", str(rootfs), "-xf", str(tarball)], check=True)
    pem = make_ca_pem()
    add_extra_ca(rootfs, pem)
    bundle = (rootfs / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    assert pem.strip() in bundle
