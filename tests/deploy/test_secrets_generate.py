"""``ofc secrets generate``: every platform secret as a 0600 file, values never on stdout.

Run as a user runs it (``python -m ofc`` in a subprocess), so what is asserted about
standard output and standard error is what a terminal or a CI log would show.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from auth.config import CLIENT_SECRET_PLACEHOLDER
from ofc.secrets_gen import SECRETS, commands, generate

REPO = Path(__file__).resolve().parents[2]
GENERATED = {s.name for s in SECRETS} - {"private-key"}


def ofc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ofc", "secrets", "generate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)},
    )


def values(dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in dir.iterdir()}


def secret_values(dir: Path) -> list[str]:
    """Every value worth hiding (not the user name nor the placeholder), and PEM bodies."""
    out = []
    for name, value in values(dir).items():
        if name in ("basic-auth-user", "oauth-client-secret", "jwt-public-key"):
            continue
        out += [line for line in value.splitlines() if line and "-----" not in line]
    return out


def make_app_key(path: Path) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return pem


def test_generate_writes_each_secret_as_a_0600_file_in_a_0700_folder(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    done = ofc("--dir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == GENERATED
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert done.stdout == ""
    # The one secret only GitHub can make is named, with where to put it.
    assert "missing: private-key" in done.stderr and str(out / "private-key") in done.stderr


def test_generated_values_are_usable_and_distinct(tmp_path: Path) -> None:
    generate(tmp_path / "s")
    v = values(tmp_path / "s")
    assert len(v["payload-secret"]) == 64 and len(v["github-webhook-secret"]) == 64
    assert v["payload-secret"] != v["github-webhook-secret"]
    assert v["basic-auth-user"] == "admin"
    assert len(v["basic-auth-password"]) >= 32 and v["basic-auth-password"].isalnum()
    assert v["oauth-client-secret"] == CLIENT_SECRET_PLACEHOLDER  # edge-auth says what to set
    private = serialization.load_pem_private_key(v["jwt-private-key"].encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1"
    public = serialization.load_pem_public_key(v["jwt-public-key"].encode())
    assert public == private.public_key()
    other = tmp_path / "t"
    generate(other)
    assert values(other)["payload-secret"] != v["payload-secret"]


def test_signing_key_works_with_edge_auth_loader(tmp_path: Path) -> None:
    from auth.keys import load_signing_keys

    generate(tmp_path)
    # edge-auth refuses to start on a pair that does not match; this one must load.
    keys = load_signing_keys(tmp_path)
    assert keys.private_pem == (tmp_path / "jwt-private-key").read_bytes()


def test_running_again_keeps_every_existing_value(tmp_path: Path) -> None:
    out = tmp_path / "s"
    ofc("--dir", str(out), cwd=tmp_path)
    before = values(out)
    (out / "basic-auth-password").write_text("the-gateway-already-has-this")
    os.chmod(out / "basic-auth-password", 0o644)  # an operator's copy, loosely permissioned
    done = ofc("--dir", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after = values(out)
    assert after == {**before, "basic-auth-password": "the-gateway-already-has-this"}
    assert stat.S_IMODE((out / "basic-auth-password").stat().st_mode) == 0o600
    assert "kept as they were" in done.stderr and "created" not in done.stderr


def test_a_lost_public_key_is_derived_again_from_the_kept_private_key(tmp_path: Path) -> None:
    generate(tmp_path)
    public = (tmp_path / "jwt-public-key").read_bytes()
    (tmp_path / "jwt-public-key").unlink()
    result = generate(tmp_path)
    assert result.created == ("jwt-public-key",)
    assert (tmp_path / "jwt-public-key").read_bytes() == public


def test_github_app_key_is_copied_in_and_then_kept(tmp_path: Path) -> None:
    pem = make_app_key(tmp_path / "app.pem")
    out = tmp_path / "s"
    done = ofc("--dir", str(out), "--github-private-key", str(tmp_path / "app.pem"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (out / "private-key").read_bytes() == pem
    assert stat.S_IMODE((out / "private-key").stat().st_mode) == 0o600
    assert "missing" not in done.stderr


def test_a_different_github_key_does_not_silently_replace_the_stored_one(tmp_path: Path) -> None:
    out = tmp_path / "s"
    first = make_app_key(tmp_path / "first.pem")
    make_app_key(tmp_path / "second.pem")
    ofc("--dir", str(out), "--github-private-key", str(tmp_path / "first.pem"), cwd=tmp_path)
    again = ofc(
        "--dir", str(out), "--github-private-key", str(tmp_path / "first.pem"), cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    other = ofc(
        "--dir", str(out), "--github-private-key", str(tmp_path / "second.pem"), cwd=tmp_path
    )
    assert other.returncode == 1
    assert "remove it to store" in other.stderr
    assert (out / "private-key").read_bytes() == first


def test_a_github_key_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key.txt").write_text("not a key")
    done = ofc(
        "--dir",
        str(tmp_path / "s"),
        "--github-private-key",
        str(tmp_path / "key.txt"),
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert "is not a PEM private key" in done.stderr
    assert not (tmp_path / "s" / "private-key").exists()


@pytest.mark.parametrize("fmt", ["kubectl", "faas-cli"])
def test_commands_name_the_files_and_never_carry_a_value(tmp_path: Path, fmt: str) -> None:
    make_app_key(tmp_path / "app.pem")
    out = tmp_path / "s"
    done = ofc(
        "--dir",
        str(out),
        "--format",
        fmt,
        "--github-private-key",
        str(tmp_path / "app.pem"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for value in secret_values(out):
        assert value not in done.stdout and value not in done.stderr
    lines = done.stdout.splitlines()
    for spec in SECRETS:
        assert any(str(out / spec.name) in line for line in lines), spec.name
    # Every command reads files only.
    assert all("--from-literal" not in line for line in lines)


def test_kubectl_commands_put_each_secret_in_its_namespaces(tmp_path: Path) -> None:
    generate(tmp_path)
    names = [p.name for p in tmp_path.iterdir()]
    lines = commands("kubectl", tmp_path, names)

    def created(name: str, ns: str) -> list[str]:
        return [c for c in lines if c.startswith(f"kubectl create secret generic {name} -n {ns} ")]

    assert created("payload-secret", "openfaas-fn") and created("payload-secret", "openfaas")
    assert created("jwt-private-key", "openfaas") and not created("jwt-private-key", "openfaas-fn")
    assert created("github-webhook-secret", "openfaas-fn")
    assert created("oauth-client-secret", "openfaas")
    (gateway,) = created("basic-auth", "openfaas")
    assert f"--from-file=basic-auth-user={tmp_path / 'basic-auth-user'}" in gateway
    assert f"--from-file=basic-auth-password={tmp_path / 'basic-auth-password'}" in gateway
    # Re-runnable: applied, not created (which fails when the secret exists).
    assert all(c.endswith("--dry-run=client -o yaml | kubectl apply -f -") for c in lines)


def test_faas_cli_commands_store_function_secrets_through_the_gateway(tmp_path: Path) -> None:
    generate(tmp_path)
    lines = commands("faas-cli", tmp_path, [p.name for p in tmp_path.iterdir()])
    assert (
        f"faas-cli secret create payload-secret --from-file {tmp_path / 'payload-secret'}"
        in lines[1]
    )
    # The core namespace is out of faas-cli's reach: kubectl there.
    assert any(
        c.startswith("kubectl create secret generic payload-secret -n openfaas ") for c in lines
    )
    assert not any(c.startswith("faas-cli") and "jwt-private-key" in c for c in lines)


def test_values_reach_stdout_only_with_show_values(tmp_path: Path) -> None:
    out = tmp_path / "s"
    quiet = ofc("--dir", str(out), "--format", "kubectl", cwd=tmp_path)
    password = (out / "basic-auth-password").read_text()
    assert password not in quiet.stdout + quiet.stderr
    shown = ofc("--dir", str(out), "--show-values", cwd=tmp_path)
    assert f"basic-auth-password={password}" in shown.stdout.splitlines()
    assert (out / "jwt-private-key").read_text().splitlines()[1] not in shown.stdout


def test_owner_gives_the_files_to_the_services_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    out = tmp_path / "s"
    done = ofc("--dir", str(out), "--owner", "10001", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.stat().st_uid == 10001
    assert {p.stat().st_uid for p in out.iterdir()} == {10001}
