"""The ``buildkit`` backend without an engine: its commands, its CA bundle, its settings,
the reasons it gives, and a real ``python -m builder`` driving stand-in docker clients.

The stand-ins are shell scripts that answer ``build --help`` as Debian's client does and
record the arguments of every other call, so what the builder would run is checked
exactly; the real engine is exercised in ``test_buildkit_engine.py``.
"""

from __future__ import annotations

import datetime
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from builder.backends import BuildJob
from builder.backends.buildkit import (
    Progress,
    build_args,
    buildctl_argv,
    compose_ca_bundle,
    docker_build_argv,
    docker_push_argv,
    read_extra_ca,
)
from builder.config import BuilderConfig, ConfigError
from sdk.signing import BUILD_SIGNATURE, sign
from tests.builder.test_builder_api import make_context, make_tar
from tests.helpers import REPO, alive, free_port, start_service, stop_pid, wait_until

IMAGE = "127.0.0.1:5000/alice/hello:main-0123456789ab"


# -- helpers --------------------------------------------------------------------------------------
def make_ca_pem(common_name: str = "ofc test CA") -> tuple[bytes, bytes]:
    """A fresh self-signed CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def fake_docker(path: Path, record: Path, body: str) -> Path:
    """A docker client stand-in: ``build --help`` as Debian's 20.10 answers, every other
    call's arguments appended to ``record`` (one per line, calls ended by ``--``), then
    ``body`` (shell) runs."""
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = build ] && [ "$2" = --help ]; then\n'
        '    echo "      --secret stringArray      Secret file to expose to the build"\n'
        "    exit 0\n"
        "fi\n"
        f'for arg in "$@"; do printf \'%s\\n\' "$arg"; done >> {record}\n'
        f"echo -- >> {record}\n" + textwrap.dedent(body)
    )
    path.chmod(0o755)
    return path


def calls(record: Path) -> list[list[str]]:
    """The recorded calls of a :func:`fake_docker`, each as its argument list."""
    if not record.exists():
        return []
    out: list[list[str]] = [[]]
    for line in record.read_text().splitlines():
        if line == "--":
            out.append([])
        else:
            out[-1].append(line)
    return out[:-1]


def start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, str, Path]:  # type: ignore[type-arg]
    """A ``python -m builder`` with the buildkit backend; (process, url, state dir)."""
    state = tmp_path / "state"
    port = free_port()
    proc = start_service(
        "builder",
        {
            "OFC_STATE_DIR": str(state),
            "OFC_BUILDER_PORT": str(port),
            "OFC_BUILDER_BACKEND": "buildkit",
            "OFC_DOCKER_HOST": "unix:///nonexistent/docker.sock",
            **env,
        },
        tmp_path / "builder.log",
        f"http://127.0.0.1:{port}/healthz",
    )
    return proc, f"http://127.0.0.1:{port}", state


def post(url: str, state: Path, body: bytes) -> requests.Response:
    secret = (state / "secrets" / "functions" / "payload-secret").read_text().strip()
    return requests.post(
        f"{url}/build", data=body, headers={BUILD_SIGNATURE: sign(body, secret)}, timeout=120
    )


def start_fails(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m builder`` expecting it to refuse to start."""
    return subprocess.run(
        [sys.executable, "-m", "builder"],
        cwd=REPO,
        env={
            **os.environ,
            "OFC_STATE_DIR": str(tmp_path / "state"),
            "OFC_BUILDER_PORT": str(free_port()),
            "OFC_BUILDER_BACKEND": "buildkit",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- commands -------------------------------------------------------------------------------------
def test_docker_build_argv_has_buildkit_options_secret_build_args_tag_and_context() -> None:
    job = BuildJob(IMAGE, Path("/w/context"), {"TEST_ENABLED": "false"}, ("linux/amd64",))
    argv = docker_build_argv("/usr/bin/docker", job, build_args(job, "base:1"), Path("/p/ca.crt"))
    assert argv == [
        "/usr/bin/docker", "build", "--progress", "plain", "--network", "host",
        "--platform", "linux/amd64",
        "--secret", "id=ca-certificates,src=/p/ca.crt",
        "--build-arg", "TEST_ENABLED=false",
        "--build-arg", "BASE_IMAGE=base:1",
        "-t", IMAGE, "/w/context",
    ]  # fmt: skip


def test_docker_build_argv_without_ca_or_platform_passes_neither() -> None:
    job = BuildJob(IMAGE, Path("/w/context"))
    argv = docker_build_argv("docker", job, {}, None)
    assert argv == ["docker", "build", "--progress", "plain", "--network", "host",
                    "-t", IMAGE, "/w/context"]  # fmt: skip


def test_docker_push_argv_pushes_the_tag() -> None:
    assert docker_push_argv("/usr/bin/docker", IMAGE) == ["/usr/bin/docker", "push", IMAGE]


@pytest.mark.parametrize(
    ("image", "insecure"),
    [
        pytest.param(IMAGE, True, id="loopback-ip"),
        pytest.param("localhost:5000/a/b:c", True, id="localhost"),
        pytest.param("[::1]:5000/a/b:c", True, id="loopback-ipv6"),
        pytest.param("registry.example.com/a/b:c", False, id="remote"),
    ],
)
def test_buildctl_argv_builds_and_pushes_in_one_step_for_every_platform(
    image: str, insecure: bool
) -> None:
    job = BuildJob(image, Path("/w/context"), {"X": "1"}, ("linux/amd64", "linux/arm64"))
    argv = buildctl_argv(
        "/opt/buildctl", "unix:///run/buildkit/buildkitd.sock", job, build_args(job, "b:1"),
        Path("/p/ca.crt"),
    )  # fmt: skip
    output = f"type=image,name={image},push=true" + (",registry.insecure=true" if insecure else "")
    assert argv == [
        "/opt/buildctl", "--addr", "unix:///run/buildkit/buildkitd.sock", "build",
        "--frontend", "dockerfile.v0",
        "--local", "context=/w/context", "--local", "dockerfile=/w/context",
        "--opt", "build-arg:X=1", "--opt", "build-arg:BASE_IMAGE=b:1",
        "--opt", "platform=linux/amd64,linux/arm64",
        "--secret", "id=ca-certificates,src=/p/ca.crt",
        "--output", output, "--progress", "plain",
    ]  # fmt: skip


def test_build_args_keep_the_requests_base_image() -> None:
    job = BuildJob(IMAGE, Path("/c"), {"BASE_IMAGE": "mine:2", "ADDITIONAL_PACKAGE": "curl"})
    assert build_args(job, "default:1") == {"BASE_IMAGE": "mine:2", "ADDITIONAL_PACKAGE": "curl"}


# -- CA bundle ------------------------------------------------------------------------------------
def test_ca_bundle_is_the_system_bundle_then_the_extra_ca_in_a_private_folder(
    tmp_path: Path,
) -> None:
    system, _ = make_ca_pem("system")
    extra, _ = make_ca_pem("extra")
    (tmp_path / "system.crt").write_bytes(system)
    (tmp_path / "extra.crt").write_bytes(extra)
    dest = compose_ca_bundle(tmp_path / "system.crt", tmp_path / "extra.crt", tmp_path / "own")
    assert dest == tmp_path / "own" / "ca-certificates.crt"
    assert dest.read_bytes() == system + extra
    assert len(x509.load_pem_x509_certificates(dest.read_bytes())) == 2
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    assert [p.name for p in dest.parent.iterdir()] == ["ca-certificates.crt"]  # no temp left


def test_ca_bundle_without_any_certificates_is_none(tmp_path: Path) -> None:
    assert compose_ca_bundle(None, None, tmp_path / "own") is None
    assert not (tmp_path / "own").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"hello\n", "not PEM certificates", id="not-pem"),
        pytest.param(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            "not PEM certificates",
            id="bad-certificate",
        ),
        pytest.param(b"", "not PEM certificates", id="empty"),
        pytest.param(None, "holds a private key", id="private-key"),
    ],
)
def test_extra_ca_that_is_not_just_certificates_is_refused_naming_the_variable(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    if content is None:
        cert, key = make_ca_pem()
        content = cert + key
    path = tmp_path / "extra.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="OFC_BUILDER_EXTRA_CA") as info:
        read_extra_ca(path)
    assert reason in str(info.value)


def test_system_bundle_without_a_certificate_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bundle.crt").write_text("nothing here\n")
    with pytest.raises(ConfigError, match="OFC_BUILDER_CA_BUNDLE=.*no PEM certificate"):
        compose_ca_bundle(tmp_path / "bundle.crt", None, tmp_path / "own")


# -- settings -------------------------------------------------------------------------------------
def test_unknown_backend_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match="OFC_BUILDER_BACKEND='kaniko': expected one of local, buildkit"
    ):
        BuilderConfig.from_env({"OFC_BUILDER_BACKEND": "kaniko"})


def test_docker_host_defaults_to_the_ofc_engine_socket_when_it_exists(tmp_path: Path) -> None:
    env = {"OFC_BUILDER_BACKEND": "buildkit", "OFC_STATE_DIR": str(tmp_path)}
    before = BuilderConfig.from_env(env).buildkit
    assert before is not None and before.docker_host == "unix:///var/run/docker.sock"
    (tmp_path / "engine").mkdir()
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tmp_path / "engine" / "docker.sock"))
        after = BuilderConfig.from_env(env).buildkit
    assert after is not None and after.docker_host == f"unix://{tmp_path}/engine/docker.sock"


def test_buildkit_settings_are_read_only_for_the_buildkit_backend() -> None:
    assert BuilderConfig.from_env({"OFC_DOCKER_HOST": "nonsense"}).buildkit is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"OFC_DOCKER_HOST": "/var/run/docker.sock"}, "OFC_DOCKER_HOST=", id="host"),
        pytest.param(
            {"OFC_BUILDER_EXTRA_CA": "/nonexistent.pem"}, "OFC_BUILDER_EXTRA_CA=", id="ca"
        ),
        pytest.param(
            {"OFC_BUILDER_CA_BUNDLE": "/nonexistent.crt"}, "OFC_BUILDER_CA_BUNDLE=", id="bundle"
        ),  # fmt: skip
    ],
)
def test_malformed_buildkit_setting_is_refused_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BuilderConfig.from_env({"OFC_BUILDER_BACKEND": "buildkit", **env})


def test_builder_refuses_to_start_with_a_docker_client_that_needs_buildx(tmp_path: Path) -> None:
    # What a docker client >= 23 without the buildx plugin says with DOCKER_BUILDKIT=1.
    newer = tmp_path / "docker"
    newer.write_text(
        "#!/bin/sh\n"
        "echo 'ERROR: BuildKit is enabled but the buildx component is missing or broken.' >&2\n"
        "exit 1\n"
    )
    newer.chmod(0o755)
    done = start_fails(tmp_path, OFC_DOCKER_CLI=str(newer))
    assert done.returncode == 2
    assert f"OFC_DOCKER_CLI='{newer}' cannot build with BuildKit" in done.stderr
    assert "buildx component is missing" in done.stderr


def test_builder_refuses_to_start_with_a_missing_docker_client(tmp_path: Path) -> None:
    done = start_fails(tmp_path, OFC_DOCKER_CLI=str(tmp_path / "no-docker"))
    assert done.returncode == 2
    assert "OFC_DOCKER_CLI=" in done.stderr and "no such executable" in done.stderr


def test_builder_refuses_to_start_with_buildkit_addr_but_no_buildctl(tmp_path: Path) -> None:
    done = start_fails(
        tmp_path,
        OFC_BUILDKIT_ADDR="unix:///run/buildkit/buildkitd.sock",
        OFC_BUILDCTL=str(tmp_path / "no-buildctl"),
    )
    assert done.returncode == 2
    assert "OFC_BUILDCTL=" in done.stderr and "not an executable" in done.stderr


def test_builder_refuses_to_start_with_an_extra_ca_that_is_not_pem(tmp_path: Path) -> None:
    (tmp_path / "extra.pem").write_text("not a certificate\n")
    record = tmp_path / "calls"
    docker = fake_docker(tmp_path / "docker", record, "exit 0\n")
    done = start_fails(
        tmp_path, OFC_DOCKER_CLI=str(docker), OFC_BUILDER_EXTRA_CA=str(tmp_path / "extra.pem")
    )
    assert done.returncode == 2
    assert "OFC_BUILDER_EXTRA_CA=" in done.stderr and "not PEM certificates" in done.stderr


# -- reasons --------------------------------------------------------------------------------------
PIP_FAILURE = """\
#1 [internal] load build definition from Dockerfile
#1 sha256:0db3e72a321a68b4598429321270b055b1ceadcbe677dbb12542586791146768
#1 DONE 0.0s
#13 [stage-0  8/13] RUN --mount=type=secret,id=ca-certificates,mode=0444     --mount=type=cache,id=ofc-pip,target=/var/cache/ofc-build/pip,uid=10001,gid=10001     if [ -f /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi;     pip install --cache-dir /var/cache/ofc-build/pip --disable-pip-version-check -r function/requirements.txt
#13 0.812 ERROR: Could not find a version that satisfies the requirement nope-ofc==0.0.1 (from versions: none)
#13 0.813 ERROR: No matching distribution found for nope-ofc==0.0.1
#13 ERROR: executor failed running [/bin/sh -c pip install -r function/requirements.txt]: exit code: 1
------
 > [stage-0  8/13] RUN --mount=type=secret,id=ca-certificates,mode=0444     pip install -r function/requirements.txt:
#13 0.813 ERROR: something docker repeats
------
executor failed running [/bin/sh -c pip install -r function/requirements.txt]: exit code: 1
"""
PYTEST_FAILURE = """\
#17 [stage-0 12/13] RUN set -eu; status=0; (cd function && python -c 'import pytest') || status=$?
#17 1.327 ============================= test session starts ==============================
#17 1.331 collected 2 items
#17 1.331 handler_test.py F.                                                       [100%]
#17 1.340 =========================== short test summary info ============================
#17 1.340 FAILED handler_test.py::test_greets - AssertionError: assert 'Hello' == 'Bye'
#17 1.340 ========================= 1 failed, 1 passed in 0.03s ==========================
#17 ERROR: process "/bin/sh -c set -eu" did not complete successfully: exit code: 1
------
error: failed to solve: process "/bin/sh -c set -eu" did not complete successfully: exit code: 1
"""
APT_FAILURE = """\
#5 [stage-0  2/13] RUN apt-get install -qy --no-install-recommends nope
#5 0.500 Reading package lists...
#5 0.900 E: Unable to locate package nope
#5 ERROR: executor failed running [/bin/sh -c apt-get]: exit code: 100
"""
BASE_IMAGE_MISSING = """\
#3 [internal] load metadata for docker.io/ofc/missing:1
#3 ERROR: pull access denied, repository does not exist or may require authorization
------
failed to solve with frontend dockerfile.v0: failed to create LLB definition: pull access denied
"""
PARSE_ERROR = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 3: unknown instruction: FOO
"""


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        pytest.param(
            PIP_FAILURE,
            "ERROR: No matching distribution found for nope-ofc==0.0.1 (in step [stage-0 8/13] "
            "RUN if [ -f /run/secrets/ca-certificates ]; t … rsion-check -r function/requirements.txt)",
            id="pip",
        ),
        pytest.param(
            PYTEST_FAILURE,
            "the function's tests failed: FAILED handler_test.py::test_greets - AssertionError: "
            "assert 'Hello' == 'Bye'; 1 failed, 1 passed in 0.03s (in step [stage-0 12/13] RUN "
            "set -eu; status=0; (cd function && python -c 'import pytest') || status=$?)",
            id="pytest",
        ),
        pytest.param(
            APT_FAILURE,
            "E: Unable to locate package nope (in step [stage-0 2/13] RUN apt-get install -qy "
            "--no-install-recommends nope)",
            id="apt",
        ),
        pytest.param(
            BASE_IMAGE_MISSING,
            "pull access denied, repository does not exist or may require authorization "
            "(in step [internal] load metadata for docker.io/ofc/missing:1)",
            id="base-image",
        ),
        pytest.param(
            PARSE_ERROR,
            "failed to solve with frontend dockerfile.v0: failed to create LLB definition: "
            "dockerfile parse error line 3: unknown instruction: FOO",
            id="dockerfile-syntax",
        ),
        pytest.param("", "exited with status 1 without saying why", id="silent"),
    ],
)
def test_progress_reason_names_what_the_user_must_fix(output: str, reason: str) -> None:
    progress = Progress()
    for line in output.splitlines():
        progress.feed(line)
    assert progress.reason(1) == reason


# -- a builder driving stand-in clients ----------------------------------------------------------
def test_build_runs_docker_with_the_ca_secret_and_answers_500_with_pips_reason(
    tmp_path: Path,
) -> None:
    record = tmp_path / "calls"
    docker = fake_docker(tmp_path / "docker", record, f"cat <<'EOF'\n{PIP_FAILURE}EOF\nexit 1\n")
    extra, _ = make_ca_pem()
    (tmp_path / "extra.pem").write_bytes(extra)
    proc, url, state = start(
        tmp_path,
        OFC_DOCKER_CLI=str(docker),
        OFC_BUILDER_BASE_IMAGE="127.0.0.1:5000/ofc/base:1",
        OFC_BUILDER_EXTRA_CA=str(tmp_path / "extra.pem"),
    )
    try:
        body = make_tar(
            make_context(tmp_path),
            config={
                "image": IMAGE,
                "buildArgs": {"PIP_INDEX_URL": "https://u:tok@pypi.example/simple"},
            },
        )
        response = post(url, state, body)
    finally:
        stop_pid(proc)
    result = response.json()
    assert response.status_code == 500, result
    assert result["log"][-1] == (
        "build failed: docker build failed: ERROR: No matching distribution found for "
        "nope-ofc==0.0.1 (in step [stage-0 8/13] RUN if [ -f /run/secrets/ca-certificates ]; t "
        "… rsion-check -r function/requirements.txt)"
    )
    assert "#13 0.813 ERROR: No matching distribution found for nope-ofc==0.0.1" in result["log"]
    assert not any("tok" in line for line in result["log"])  # the index URL's token
    (build,) = calls(record)  # no push after a failed build
    ca_file = state / "builder" / "buildkit" / "ca-certificates.crt"
    assert build[:9] == [
        "build", "--progress", "plain", "--network", "host",
        "--secret", f"id=ca-certificates,src={ca_file}",
        "--build-arg", "PIP_INDEX_URL=https://u:tok@pypi.example/simple",
    ]  # fmt: skip
    assert build[9:13] == ["--build-arg", "BASE_IMAGE=127.0.0.1:5000/ofc/base:1", "-t", IMAGE]
    assert build[13].startswith(str(state / "builder" / "work"))  # the unpacked context
    assert ca_file.read_bytes().endswith(extra)


def test_build_that_pushes_nowhere_answers_500_with_the_push_error(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    docker = fake_docker(
        tmp_path / "docker",
        record,
        """\
        if [ "$1" = push ]; then
            echo "The push refers to repository [127.0.0.1:5000/alice/hello]"
            echo 'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused'
            exit 1
        fi
        echo "#9 [internal] load build context"
        """,
    )
    proc, url, state = start(tmp_path, OFC_DOCKER_CLI=str(docker))
    try:
        response = post(url, state, make_tar(make_context(tmp_path), IMAGE))
    finally:
        stop_pid(proc)
    assert response.status_code == 500
    assert response.json()["log"][-1] == (
        f'build failed: pushing {IMAGE} failed: Get "http://127.0.0.1:5000/v2/": '
        "dial tcp 127.0.0.1:5000: connect: connection refused"
    )
    assert [call[0] for call in calls(record)] == ["build", "push"]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        pytest.param(
            {"image": IMAGE, "platforms": ["linux/amd64", "linux/arm64"]},
            "building for several platforms (linux/amd64, linux/arm64) needs buildctl",
            id="multi-platform",
        ),
        pytest.param(
            {"image": "alice/hello:v1"},
            "alice/hello:v1 names no registry, so it would be pushed to Docker Hub",
            id="docker-hub",
        ),
    ],
)
def test_build_the_engine_cannot_do_fails_before_calling_docker(
    tmp_path: Path, config: dict[str, object], reason: str
) -> None:
    record = tmp_path / "calls"
    docker = fake_docker(tmp_path / "docker", record, "exit 0\n")
    proc, url, state = start(tmp_path, OFC_DOCKER_CLI=str(docker))
    try:
        response = post(url, state, make_tar(make_context(tmp_path), config=config))
    finally:
        stop_pid(proc)
    assert response.status_code == 500
    assert reason in response.json()["log"][-1]
    assert calls(record) == []


def test_build_over_the_time_limit_kills_the_docker_client_and_its_children(
    tmp_path: Path,
) -> None:
    record = tmp_path / "calls"
    pid_file = tmp_path / "child.pid"
    docker = fake_docker(tmp_path / "docker", record, f"sleep 600 &\necho $! > {pid_file}\nwait\n")
    proc, url, state = start(tmp_path, OFC_DOCKER_CLI=str(docker), OFC_BUILDER_TIMEOUT="2s")
    try:
        response = post(url, state, make_tar(make_context(tmp_path), IMAGE))
        assert response.status_code == 500
        assert response.json()["log"][-1] == (
            "build failed: it took longer than 2 s (OFC_BUILDER_TIMEOUT)"
        )
        child = int(pid_file.read_text())
        wait_until(lambda: not alive(child), 10, f"the client's child {child} still runs")
    finally:
        stop_pid(proc)
