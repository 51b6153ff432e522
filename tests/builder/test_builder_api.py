"""The builder's HTTP API over real HTTP: a ``python -m builder`` process on a free port.

Contexts are the python3-http template with a handler overlaid, sent as the go-sdk's
``MakeTar`` lays them out. Virtualenvs go to the session's cache (``venv_dir``), so only
the first build with a set of requirements pays for pip.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from builder.config import BuilderConfig, ConfigError
from builder.tarball import CONFIG_NAME
from runtime.artifacts import ArtifactNotFound, ArtifactStore
from runtime.venvs import VenvCache
from sdk.build_context import create_build_context
from sdk.openfaas import FunctionDeployment
from sdk.signing import BUILD_SIGNATURE, sign
from sdk.stack import load_stack
from tests.conftest import REPO, TEMPLATE, RunningGateway, free_port, stop_pid
from tests.helpers import child_pids, start_service, wait_until

HANDLER = """
def handle(event, context):
    return {"statusCode": 200, "body": "built by the builder"}
"""
MISSING = "this-package-does-not-exist-ofc==0.0.1"


@dataclass
class RunningBuilder:
    """A ``python -m builder`` process."""

    state_dir: Path
    venv_dir: Path
    port: int
    proc: subprocess.Popen  # type: ignore[type-arg]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def secret(self) -> str:
        return (self.state_dir / "secrets" / "functions" / "payload-secret").read_text().strip()

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.state_dir / "artifacts")

    def post(
        self,
        body: bytes,
        *,
        signature: str | None = None,
        query: str = "",
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """POST /build, signed with the payload secret unless ``signature`` is given."""
        sent = {BUILD_SIGNATURE: signature if signature is not None else sign(body, self.secret)}
        if signature == "":
            del sent[BUILD_SIGNATURE]
        return requests.post(
            f"{self.url}/build{query}",
            data=body,
            headers={**sent, **(headers or {})},
            stream=stream,
            timeout=300,
        )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_builder(state_dir: Path, venv_dir: Path, **env: str) -> RunningBuilder:
    port = free_port()
    log_path = state_dir.parent / f"builder-{port}.log"
    env = {
        "OFC_STATE_DIR": str(state_dir),
        "OFC_VENV_DIR": str(venv_dir),
        "OFC_BUILDER_PORT": str(port),
        **env,
    }
    proc = start_service("builder", env, log_path, f"http://127.0.0.1:{port}/healthz")
    return RunningBuilder(state_dir, venv_dir, port, proc, log_path)


@pytest.fixture
def make_builder(tmp_path: Path, venv_dir: Path) -> Iterator:  # type: ignore[type-arg]
    """Factory: ``make_builder(**env)`` starts a builder; every one is stopped by its PID."""
    started: list[RunningBuilder] = []

    def make(
        state_dir: Path | None = None, venvs: Path | None = None, **env: str
    ) -> RunningBuilder:
        if state_dir is None:
            state_dir = tmp_path / f"state-{len(started)}"
            state_dir.mkdir()
        builder = start_builder(state_dir, venvs or venv_dir, **env)
        started.append(builder)
        return builder

    yield make
    for builder in started:
        stop_pid(builder.proc)


@pytest.fixture
def builder(make_builder) -> RunningBuilder:  # type: ignore[no-untyped-def]
    """A builder with default settings and an empty state directory."""
    return make_builder()  # type: ignore[no-any-return]


# -- request bodies ---------------------------------------------------------------------------------
def make_context(
    root: Path,
    handler: str = HANDLER,
    requirements: str = "",
    test: str | None = None,
    template: bool = True,
) -> Path:
    """The template with ``handler``; the template's own handler_test.py only if ``test``."""
    ctx = root / f"ctx-{time.monotonic_ns()}"
    if template:
        shutil.copytree(TEMPLATE, ctx)
        (ctx / "function" / "handler_test.py").unlink()
    else:
        (ctx / "function").mkdir(parents=True)
    (ctx / "function" / "handler.py").write_text(textwrap.dedent(handler))
    (ctx / "function" / "requirements.txt").write_text(requirements)
    if test is not None:
        (ctx / "function" / "handler_test.py").write_text(textwrap.dedent(test))
    return ctx


def make_tar(context: Path, image: str = "", config: dict[str, Any] | None = None) -> bytes:
    """The go-sdk's ``MakeTar`` layout: ``context/`` (with its own entry) then the config."""
    body = config if config is not None else {"image": image, "buildArgs": {}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(context, arcname="context")
        data = json.dumps(body).encode()
        info = tarfile.TarInfo(CONFIG_NAME)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def template_requirements(context: Path) -> list[str]:
    return [
        p.read_text()
        for p in (context / "requirements.txt", context / "function" / "requirements.txt")
        if p.is_file()
    ]


def ndjson(response: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.iter_lines() if line]


def raw_post(port: int, head: bytes, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Send a hand-written request and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


# -- tests ------------------------------------------------------------------------------------------
def test_healthz_answers_200(builder: RunningBuilder) -> None:
    response = requests.get(f"{builder.url}/healthz", timeout=5)
    assert response.status_code == 200


def test_get_on_build_answers_405_naming_post(builder: RunningBuilder) -> None:
    response = requests.get(f"{builder.url}/build", timeout=5)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


def test_build_of_signed_tar_stores_the_image_and_its_venv_and_answers_success(
    builder: RunningBuilder, tmp_path: Path
) -> None:
    context = make_context(tmp_path)
    response = builder.post(make_tar(context, "127.0.0.1:5000/alice/hello"))
    result = response.json()
    assert response.status_code == 200, result
    assert result["status"] == "success"
    assert result["image"] == "127.0.0.1:5000/alice/hello:latest"
    assert result["duration"] > 0
    assert result["log"][-1] == "built 127.0.0.1:5000/alice/hello:latest"
    artifact = builder.store.resolve("127.0.0.1:5000/alice/hello")
    assert (artifact.path / "function" / "handler.py").read_text() == textwrap.dedent(HANDLER)
    assert f"stored the context as {artifact.digest}" in result["log"]
    assert VenvCache(builder.venv_dir).lookup(template_requirements(context)) is not None
    assert list((builder.state_dir / "builder" / "work").iterdir()) == []  # scratch removed


def test_build_with_an_uninstallable_requirement_answers_500_with_pips_reason(
    builder: RunningBuilder, tmp_path: Path
) -> None:
    context = make_context(tmp_path, requirements=f"{MISSING}\n")
    response = builder.post(make_tar(context, "broken:v1"))
    result = response.json()
    assert response.status_code == 500
    assert result["status"] == "failure"
    log = "\n".join(result["log"])
    assert "No matching distribution found for this-package-does-not-exist-ofc" in log
    # The summary line names the cause (pip's own ERROR line), not just the failed step.
    assert result["log"][-1] == (
        f"build failed: installing requirements failed: No matching distribution found for {MISSING}"
    )
    with pytest.raises(ArtifactNotFound):
        builder.store.resolve("broken:v1")  # a failed build tags nothing


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        pytest.param("", "missing X-Build-Signature", id="missing"),
        pytest.param(sign(b"other body", "secret"), "invalid X-Build-Signature", id="other-body"),
        pytest.param("sha256=" + "0" * 64, "invalid X-Build-Signature", id="zeros"),
        pytest.param("sha1=" + "0" * 40, "invalid X-Build-Signature", id="sha1"),
        pytest.param("not-a-signature", "invalid X-Build-Signature", id="garbage"),
    ],
)
def test_build_without_a_valid_signature_answers_401_and_builds_nothing(
    builder: RunningBuilder, tmp_path: Path, signature: str, reason: str
) -> None:
    body = make_tar(make_context(tmp_path), "unsigned:v1")
    response = builder.post(body, signature=signature)
    assert response.status_code == 401
    assert response.json()["status"] == "failure"
    assert reason in response.json()["log"][0]
    assert signature not in response.text or not signature  # never echoed
    assert builder.store.list() == []


def test_build_signed_with_another_secret_answers_401(
    builder: RunningBuilder, tmp_path: Path
) -> None:
    body = make_tar(make_context(tmp_path), "unsigned:v1")
    response = builder.post(body, signature=sign(body, builder.secret + "x"))
    assert response.status_code == 401


def test_build_declaring_a_body_over_the_limit_answers_413_before_reading_it(
    make_builder,  # type: ignore[no-untyped-def]
) -> None:
    builder = make_builder(OFC_BUILDER_MAX_BYTES="1024")
    head = (
        b"POST /build HTTP/1.1\r\nHost: builder\r\nConnection: close\r\nContent-Length: 1000000000\r\n"
        b"X-Build-Signature: sha256=00\r\n\r\n"
    )
    status, result = raw_post(builder.port, head)  # the body is never sent
    assert status == 413
    assert "larger than 1024 bytes" in result["log"][0]


def test_build_streaming_a_body_over_the_limit_answers_413_while_reading(
    make_builder,  # type: ignore[no-untyped-def]
) -> None:
    builder = make_builder(OFC_BUILDER_MAX_BYTES="1024")
    head = (
        b"POST /build HTTP/1.1\r\nHost: builder\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
        b"X-Build-Signature: sha256=00\r\n\r\n"
    )
    chunks = b"".join(b"200\r\n" + b"a" * 0x200 + b"\r\n" for _ in range(6)) + b"0\r\n\r\n"
    status, result = raw_post(builder.port, head, chunks)
    assert status == 413
    assert "larger than 1024 bytes" in result["log"][0]


def test_build_beyond_the_concurrency_limit_answers_429_until_a_slot_frees(
    make_builder,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    builder = make_builder(OFC_BUILDER_CONCURRENCY="1")
    # pip blocks opening a FIFO named by "-r" until the test opens its other end: the
    # first build holds its slot for exactly as long as the test wants.
    fifo = tmp_path / "hold-requirements.fifo"
    os.mkfifo(fifo)
    held = make_context(tmp_path, requirements=f"-r {fifo}\n", template=False)
    first = builder.post(make_tar(held, "held:v1"), query="?stream=true", stream=True)
    lines = first.iter_lines()
    assert json.loads(next(lines))["status"] == "in_progress"  # accepted: the slot is taken

    second = builder.post(make_tar(make_context(tmp_path), "second:v1"))
    assert second.status_code == 429
    assert second.headers["retry-after"] == "5"
    assert "all 1 build slots are busy" in second.json()["log"][0]

    release = threading.Thread(target=lambda: fifo.write_text("\n"), daemon=True)
    release.start()
    release.join(60)
    assert not release.is_alive(), "pip never opened the requirements FIFO"
    final = [json.loads(line) for line in lines if line][-1]
    assert final["status"] == "success", final
    third = builder.post(make_tar(make_context(tmp_path), "third:v1"))
    assert third.status_code == 200, third.json()


def test_build_over_the_time_limit_answers_500_and_leaves_no_pip_running(
    make_builder,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    builder = make_builder(OFC_BUILDER_TIMEOUT="1s")
    fifo = tmp_path / "never-written.fifo"
    os.mkfifo(fifo)  # pip waits on it for ever
    held = make_context(tmp_path, requirements=f"-r {fifo}\n", template=False)
    response = builder.post(make_tar(held, "slow:v1"))
    assert response.status_code == 500
    assert response.json()["log"][-1] == (
        "build failed: it took longer than 1 s (OFC_BUILDER_TIMEOUT)"
    )
    assert child_pids(builder.proc.pid) == set()
    # Nor anywhere else: pip --python runs a second pip as its child, which must not be
    # left behind reparented to init, blocked on the FIFO for ever.
    wait_until(
        lambda: not pips_under(builder.venv_dir),
        10,
        lambda: f"pip left running: {pips_under(builder.venv_dir)}",
    )
    with pytest.raises(ArtifactNotFound):
        builder.store.resolve("slow:v1")


def pips_under(venv_dir: Path) -> list[int]:
    """PIDs of processes anywhere on the machine running pip for ``venv_dir``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"pip" in cmdline and str(venv_dir).encode() in cmdline:
                found.append(int(proc.name))
    return found


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        pytest.param("?stream=true", {}, id="query"),
        pytest.param("", {"Accept": "application/x-ndjson"}, id="accept-header"),
    ],
)
def test_streaming_build_sends_progress_lines_then_the_result(
    builder: RunningBuilder, tmp_path: Path, query: str, headers: dict[str, str]
) -> None:
    body = make_tar(make_context(tmp_path), "streamed:v1")
    response = builder.post(body, query=query, headers=headers, stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    records = ndjson(response)
    progress, final = records[:-1], records[-1]
    assert [r["log"][0] for r in progress[:2]] == ["building streamed:v1", progress[1]["log"][0]]
    assert progress[1]["log"][0].startswith("stored the context as sha256:")
    assert all(r["status"] == "in_progress" and len(r["log"]) == 1 for r in progress)
    assert final["status"] == "success"
    assert final["log"] == ["built streamed:v1"]
    assert final["image"] == "streamed:v1"
    builder.store.resolve("streamed:v1")


def test_streaming_build_that_fails_ends_with_a_failure_line_saying_why(
    builder: RunningBuilder, tmp_path: Path
) -> None:
    body = make_tar(make_context(tmp_path, requirements=f"{MISSING}\n"), "broken:v2")
    response = builder.post(body, query="?stream=true", stream=True)
    assert response.status_code == 200  # sent before the build could fail
    records = ndjson(response)
    assert records[-1]["status"] == "failure"
    assert records[-1]["log"][0].startswith("build failed: installing requirements failed")
    assert any("No matching distribution" in r["log"][0] for r in records[:-1])


@pytest.mark.parametrize(
    ("make_body", "reason"),
    [
        pytest.param(lambda ctx: b"this is not a tar" * 100, "not a valid tar", id="not-a-tar"),
        pytest.param(
            lambda ctx: make_tar(ctx, config={"buildArgs": {}}), "image is required", id="no-image"
        ),
        pytest.param(
            lambda ctx: make_tar(ctx, config={"image": "Bad Image"}), "whitespace", id="bad-image"
        ),
        pytest.param(
            lambda ctx: make_tar(ctx, config={"image": "a", "buildArgs": ["x"]}),
            "buildArgs must be",
            id="build-args-list",
        ),
        pytest.param(lambda ctx: _traversal_tar(), "'..' components", id="path-traversal"),
        pytest.param(lambda ctx: _no_config_tar(ctx), f"no {CONFIG_NAME}", id="no-config"),
    ],
)
def test_build_of_a_malformed_request_answers_400_with_the_reason(
    builder: RunningBuilder, tmp_path: Path, make_body: Any, reason: str
) -> None:
    response = builder.post(make_body(make_context(tmp_path)))
    assert response.status_code == 400
    result = response.json()
    assert result["status"] == "failure"
    assert result["log"][0].startswith("malformed build request: ")
    assert reason in result["log"][0]
    assert list((builder.state_dir / "builder" / "work").iterdir()) == []


def _traversal_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("context/../../escaped")
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def _no_config_tar(context: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(context, arcname="context")
    return buf.getvalue()


FAILING_TEST = """
from handler import handle

def test_handle_says_goodbye():
    assert handle(None, None)["body"] == "goodbye"
"""


def test_build_with_a_failing_function_test_answers_500_with_pytests_output(
    builder: RunningBuilder, tmp_path: Path
) -> None:
    body = make_tar(make_context(tmp_path, test=FAILING_TEST), "tested:v1")
    response = builder.post(body)
    result = response.json()
    assert response.status_code == 500, result
    log = "\n".join(result["log"])
    assert "running the function's tests with pytest 9.2.0" in log
    assert "FAILED handler_test.py::test_handle_says_goodbye" in log
    assert result["log"][-1].startswith("build failed: the function's tests failed (pytest exit")
    with pytest.raises(ArtifactNotFound):
        builder.store.resolve("tested:v1")


def test_build_with_test_enabled_false_skips_the_function_tests(
    builder: RunningBuilder, tmp_path: Path
) -> None:
    context = make_context(tmp_path, test=FAILING_TEST)
    body = make_tar(
        context, config={"image": "untested:v1", "buildArgs": {"TEST_ENABLED": "false"}}
    )
    response = builder.post(body)
    assert response.status_code == 200, response.json()
    assert "TEST_ENABLED=false: skipping tests" in response.json()["log"]


def test_image_built_by_the_builder_deploys_through_the_gateway_without_installing(
    gateway: RunningGateway,
    make_builder,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    builder = make_builder(state_dir=gateway.state_dir, venvs=gateway.venv_dir)
    stack = load_stack(REPO / "examples" / "stack.yml", {})
    context = create_build_context(
        stack, "hello", project_dir=REPO / "examples", template_root=REPO / "template",
        dest=tmp_path / "build",
    )  # fmt: skip
    image = "127.0.0.1:5000/e2e/hello:v1"
    response = builder.post(make_tar(context, image))
    result = response.json()
    assert response.status_code == 200, result
    assert "2 passed" in "\n".join(result["log"])  # examples/hello/handler_test.py ran

    gateway.client.deploy(FunctionDeployment(service="hello", image=image))
    gateway.wait_ready("hello")
    answer = requests.get(f"{gateway.url}/function/hello", params={"name": "Ann"}, timeout=10)
    assert answer.json() == {"message": "Hello, Ann!"}
    build_log = [r["text"] for r in gateway.client.logs("hello") if r["instance"] == "build"]
    assert not any("installing requirements" in line for line in build_log), build_log


def test_builder_generates_a_missing_payload_secret_readable_only_by_its_owner(
    builder: RunningBuilder,
) -> None:
    path = builder.state_dir / "secrets" / "functions" / "payload-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(builder.secret) == 64 and int(builder.secret, 16) >= 0


def test_builder_uses_the_payload_secret_file_it_is_given(
    make_builder,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    secret_file = tmp_path / "payload.txt"
    secret_file.write_text("shared-secret\n")
    builder = make_builder(OFC_PAYLOAD_SECRET_FILE=str(secret_file))
    body = make_tar(make_context(tmp_path), "given:v1")
    assert builder.post(body, signature=sign(body, "shared-secret")).status_code == 200


def test_builder_with_an_empty_payload_secret_file_refuses_to_start(tmp_path: Path) -> None:
    secret_file = tmp_path / "empty"
    secret_file.write_text("\n")
    env = {**os.environ, "OFC_STATE_DIR": str(tmp_path / "state"),
           "OFC_PAYLOAD_SECRET_FILE": str(secret_file), "OFC_BUILDER_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "builder"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"payload secret file {secret_file} is empty" in proc.stderr


def test_config_defaults_share_the_runtimes_state_dir() -> None:
    cfg = BuilderConfig.from_env({"OFC_STATE_DIR": "/srv/ofc"})
    assert (cfg.host, cfg.port, cfg.backend) == ("127.0.0.1", 8081, "local")
    assert (cfg.max_bytes, cfg.concurrency, cfg.build_timeout) == (100 * 1024 * 1024, 2, 600.0)
    assert cfg.artifacts_dir == Path("/srv/ofc/artifacts")
    assert cfg.venv_dir == Path("/srv/ofc/venvs")
    assert cfg.payload_secret_file == Path("/srv/ofc/secrets/functions/payload-secret")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"OFC_BUILDER_PORT": "http"}, "OFC_BUILDER_PORT='http'", id="port-word"),
        pytest.param({"OFC_BUILDER_PORT": "70000"}, "OFC_BUILDER_PORT=70000", id="port-range"),
        pytest.param(
            {"OFC_BUILDER_BACKEND": "kaniko"}, "OFC_BUILDER_BACKEND='kaniko'", id="backend"
        ),
        pytest.param({"OFC_BUILDER_CONCURRENCY": "0"}, "OFC_BUILDER_CONCURRENCY=0", id="no-builds"),
        pytest.param({"OFC_BUILDER_MAX_BYTES": "1e6"}, "OFC_BUILDER_MAX_BYTES='1e6'", id="bytes"),
        pytest.param({"OFC_BUILDER_TIMEOUT": "0"}, "OFC_BUILDER_TIMEOUT='0'", id="no-time"),
        pytest.param({"OFC_BUILDER_TIMEOUT": "5x"}, "OFC_BUILDER_TIMEOUT='5x'", id="timeout-unit"),
    ],
)
def test_config_with_a_bad_value_raises_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        BuilderConfig.from_env(env)
    assert message in str(error.value)
