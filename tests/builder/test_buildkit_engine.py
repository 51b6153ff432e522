"""The ``buildkit`` backend against a real Docker engine and registry (the ``engine`` fixture).

One ``python -m builder`` process with ``OFC_BUILDER_BACKEND=buildkit`` serves the
module. Its docker client is Debian's behind a wrapper that records every call, so a
request refused before building can be shown to have called nothing. Its extra CA is a
certificate made for this run, so the tests can tell whether it reached a build, and
whether it leaked into an image. Every image goes under a repository namespace of its
own (``<registry>/ofc-test-<hex>/...``) and is removed from the engine (and, when the
registry allows deletes, from the registry) at the end.

Run with ``OFC_TEST_DOCKER_HOST=unix:///tmp/dk/docker.sock OFC_TEST_REGISTRY=127.0.0.1:5000``.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import subprocess
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from sdk.signing import BUILD_SIGNATURE, sign
from tests.builder.test_builder_api import MISSING, make_tar
from tests.builder.test_buildkit import make_ca_pem
from tests.conftest import TEMPLATE
from tests.containers import Engine
from tests.helpers import REPO, free_port, start_service, stop_pid, wait_until

pytestmark = pytest.mark.containers

EXAMPLE = REPO / "examples" / "hello"
REQUEST_TIMEOUT = 300


@dataclass
class BuildkitBuilder:
    """The module's builder, and what it built."""

    engine: Engine
    namespace: str  # e.g. "127.0.0.1:5000/ofc-test-1a2b3c4d"
    state_dir: Path
    port: int
    proc: subprocess.Popen  # type: ignore[type-arg]
    calls_path: Path  # one line per docker call, its arguments
    extra_ca: bytes
    built: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ref(self, function: str, tag: str) -> str:
        """A reference under this run's namespace; removed at the end."""
        image = f"{self.namespace}/{function}:{tag}"
        self.built.append(image)
        return image

    def post(self, body: bytes, query: str = "", stream: bool = False) -> requests.Response:
        secret = (self.state_dir / "secrets" / "functions" / "payload-secret").read_text().strip()
        return requests.post(
            f"{self.url}/build{query}",
            data=body,
            headers={BUILD_SIGNATURE: sign(body, secret)},
            stream=stream,
            timeout=REQUEST_TIMEOUT,
        )

    def calls(self) -> list[str]:
        return self.calls_path.read_text().splitlines() if self.calls_path.exists() else []

    def local_images(self) -> set[str]:
        """Images in the engine under this run's namespace."""
        listed = self.engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
        return {ref for ref in listed.split() if ref.startswith(self.namespace + "/")}


@pytest.fixture(scope="module")
def builder(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildkitBuilder]:
    root = tmp_path_factory.mktemp("buildkit")
    calls_path = root / "docker-calls"
    wrapper = root / "docker"
    wrapper.write_text(
        f'#!/bin/sh\nprintf \'%s\\n\' "$*" >> {calls_path}\nexec {engine.docker_cli} "$@"\n'
    )
    wrapper.chmod(0o755)
    extra_ca, _ = make_ca_pem("ofc buildkit test CA")
    (root / "extra-ca.pem").write_bytes(extra_ca)
    port = free_port()
    env = {
        "OFC_STATE_DIR": str(root / "state"),
        "OFC_BUILDER_PORT": str(port),
        "OFC_BUILDER_BACKEND": "buildkit",
        "OFC_BUILDER_CONCURRENCY": "2",
        "OFC_DOCKER_CLI": str(wrapper),
        "OFC_DOCKER_HOST": engine.docker_host,
        "OFC_BUILDER_BASE_IMAGE": engine.base_image,
        "OFC_BUILDER_EXTRA_CA": str(root / "extra-ca.pem"),
    }
    proc = start_service("builder", env, root / "builder.log", f"http://127.0.0.1:{port}/healthz")
    running = BuildkitBuilder(
        engine=engine,
        namespace=f"{engine.registry}/ofc-test-{secrets.token_hex(4)}",
        state_dir=root / "state",
        port=port,
        proc=proc,
        calls_path=calls_path,
        extra_ca=extra_ca,
    )
    try:
        yield running
    finally:
        stop_pid(proc)
        _remove_images(engine, running)


def _remove_images(engine: Engine, builder: BuildkitBuilder) -> None:
    for ref in builder.local_images():
        engine.docker("rmi", "-f", ref, check=False)
    for ref in set(builder.built):
        name, _, tag = ref.removeprefix(engine.registry + "/").rpartition(":")
        base = f"http://{engine.registry}/v2/{name}/manifests"
        try:
            head = requests.head(
                f"{base}/{tag}",
                headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
                timeout=10,
            )
            digest = head.headers.get("Docker-Content-Digest")
            if head.status_code == 200 and digest:
                requests.delete(f"{base}/{digest}", timeout=10)  # 405 if deletes are off
        except requests.RequestException:
            pass  # best effort: the namespace is unique to this run


# -- contexts -------------------------------------------------------------------------------------
def hello_context(root: Path, change: str = "") -> Path:
    """``faas-cli build --shrinkwrap`` of examples/hello: the template with the handler over
    ``function/``, and ``change`` (one line) appended to handler.py."""
    context = root / f"hello-{time.monotonic_ns()}"
    shutil.copytree(TEMPLATE, context)
    for path in EXAMPLE.iterdir():
        shutil.copy(path, context / "function" / path.name)
    if change:
        handler = context / "function" / "handler.py"
        handler.write_text(handler.read_text() + change + "\n")
    return context


def registry_tags(engine: Engine, image: str) -> list[str]:
    name = image.removeprefix(engine.registry + "/").rpartition(":")[0]
    response = requests.get(f"http://{engine.registry}/v2/{name}/tags/list", timeout=10)
    if response.status_code == 404:
        return []
    response.raise_for_status()
    return list(response.json().get("tags") or [])


def steps(log: list[str]) -> dict[str, list[str]]:
    """BuildKit's plain progress in a build log: step name -> that step's status lines."""
    names: dict[str, str] = {}
    out: dict[str, list[str]] = {}
    for line in log:
        number, _, rest = line.partition(" ")
        if not number.startswith("#") or not number[1:].isdigit():
            continue
        if number not in names:
            names[number] = rest
            out[rest] = []
        else:
            out[names[number]].append(rest)
    return out


def step(log: list[str], fragment: str) -> list[str]:
    """The status lines of the one step whose name contains ``fragment``."""
    (found,) = [lines for name, lines in steps(log).items() if fragment in name]
    return found


# -- tests ----------------------------------------------------------------------------------------
def test_build_pushes_the_image_and_the_pulled_image_serves_the_function(
    builder: BuildkitBuilder, engine: Engine, tmp_path: Path
) -> None:
    image = builder.ref("hello", "main-0123456789ab")
    response = builder.post(make_tar(hello_context(tmp_path), image))
    result = response.json()
    assert response.status_code == 200, result["log"][-30:]
    assert result["status"] == "success"
    assert result["image"] == image
    assert result["log"][-1] == f"built {image}"
    assert "main-0123456789ab" in registry_tags(engine, image)

    engine.docker("rmi", image)
    assert not engine.image_exists(image)
    engine.docker("pull", image)
    port = free_port()
    container = engine.docker(
        "run", "-d", "--network", "host", "--label", f"ofc-test={builder.namespace}",
        "-e", f"port={port}", "-e", "bind_address=127.0.0.1", image,
    ).stdout.strip()  # fmt: skip
    try:

        def answer() -> requests.Response | None:
            try:
                return requests.get(f"http://127.0.0.1:{port}/?name=registry", timeout=2)
            except requests.ConnectionError:
                return None

        served = wait_until(answer, 60, lambda: engine.docker("logs", container).stderr)
        assert served.status_code == 200
        assert served.json() == {"message": "Hello, registry!"}
    finally:
        engine.docker("rm", "-f", container, check=False)


def test_build_whose_requirements_cannot_install_answers_500_naming_the_package(
    builder: BuildkitBuilder, engine: Engine, tmp_path: Path
) -> None:
    context = hello_context(tmp_path)
    (context / "function" / "requirements.txt").write_text(f"{MISSING}\n")
    image = builder.ref("broken-requirements", "v1")
    response = builder.post(make_tar(context, image))
    result = response.json()
    assert response.status_code == 500
    assert result["status"] == "failure"
    assert result["log"][-1].startswith(
        "build failed: docker build failed: ERROR: No matching distribution found for "
        "this-package-does-not-exist-ofc==0.0.1 (in step "
    )
    assert registry_tags(engine, image) == []  # nothing pushed
    assert not any(call.startswith("push ") and image in call for call in builder.calls())


def test_build_whose_tests_fail_answers_500_with_the_failing_test(
    builder: BuildkitBuilder, engine: Engine, tmp_path: Path
) -> None:
    context = hello_context(tmp_path)
    (context / "function" / "handler_test.py").write_text(
        textwrap.dedent(
            """\
            from types import SimpleNamespace

            from handler import handle


            def test_greets_in_french():
                event = SimpleNamespace(body=b"", query={"name": "Ann"}, headers={})
                assert handle(event, None)["body"] == {"message": "Bonjour, Ann!"}
            """
        )
    )
    image = builder.ref("failing-tests", "v1")
    response = builder.post(make_tar(context, image))
    result = response.json()
    assert response.status_code == 500
    assert any("FAILED handler_test.py::test_greets_in_french" in line for line in result["log"])
    assert result["log"][-1].startswith(
        "build failed: docker build failed: the function's tests failed: "
        "FAILED handler_test.py::test_greets_in_french - AssertionError"
    )
    assert "1 failed in " in result["log"][-1]
    assert registry_tags(engine, image) == []


def _tar_with(member: tarfile.TarInfo, image: str, data: bytes = b"") -> bytes:
    """A build tar with a valid context and config, plus ``member``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = b"FROM scratch\n"
        info = tarfile.TarInfo("context/Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        member.size = len(data) if member.isreg() else 0
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
        config = json.dumps({"image": image}).encode()
        info = tarfile.TarInfo("com.openfaas.docker.config")
        info.size = len(config)
        tar.addfile(info, io.BytesIO(config))
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        pytest.param(_member("/etc/cron.d/evil"), "absolute", id="absolute-path"),
        pytest.param(_member("context/../../evil"), "'..' components", id="parent"),
        pytest.param(
            _member("context/function/passwd", tarfile.SYMTYPE, "../../../../etc/passwd"),
            "symbolic links are not allowed",
            id="symlink-escaping",
        ),
        pytest.param(
            _member("context/function/disk", tarfile.BLKTYPE), "device files", id="device"
        ),
    ],
)
def test_malicious_tar_is_refused_400_before_any_docker_call(
    builder: BuildkitBuilder, member: tarfile.TarInfo, reason: str
) -> None:
    image = builder.ref("malicious", member.name.rsplit("/", 1)[-1].lower())
    calls, images = builder.calls(), builder.local_images()
    response = builder.post(_tar_with(member, image, b"x"))
    assert response.status_code == 400
    assert response.json()["log"][0].startswith("malformed build request: ")
    assert reason in response.json()["log"][0]
    assert builder.calls() == calls  # the docker client was not run
    assert builder.local_images() == images
    assert registry_tags(builder.engine, image) == []


def test_streaming_build_sends_buildkit_progress_as_it_happens_then_the_result(
    builder: BuildkitBuilder, tmp_path: Path
) -> None:
    image = builder.ref("hello", "streamed")
    body = make_tar(hello_context(tmp_path, f"# streamed {time.time_ns()}"), image)
    response = builder.post(body, query="?stream=true", stream=True)
    assert response.status_code == 200
    arrived: list[tuple[float, dict[str, Any]]] = []
    for line in response.iter_lines():
        if line:
            arrived.append((time.monotonic(), json.loads(line)))
    progress, (final_at, final) = arrived[:-1], arrived[-1]
    assert final["status"] == "success", [r["log"] for _, r in arrived[-20:]]
    assert final["log"] == [f"built {image}"]
    assert all(r["status"] == "in_progress" and len(r["log"]) == 1 for _, r in progress)
    texts = [r["log"][0] for _, r in progress]
    first_step = next(at for at, r in progress if r["log"][0].startswith("#"))
    assert any(t.startswith("$ ") and " push " in t for t in texts)
    assert any(": digest: sha256:" in t for t in texts)  # docker push's last line
    # The first BuildKit line came while the build still had its tests and push to do.
    assert final_at - first_step > 0.2


def test_rebuild_after_a_one_line_change_reuses_the_dependency_layers(
    builder: BuildkitBuilder, tmp_path: Path
) -> None:
    for round_ in range(2):
        image = builder.ref("hello", f"change-{round_}")
        change = f"# change {round_} {time.time_ns()}"
        response = builder.post(make_tar(hello_context(tmp_path, change), image))
        log = response.json()["log"]
        assert response.status_code == 200, log[-30:]
    # The second round: only what follows the handler's COPY was built again.
    assert "CACHED" in step(log, "pip install --cache-dir /var/cache/ofc-build/pip "
                            "--disable-pip-version-check -r requirements.txt")  # fmt: skip
    assert "CACHED" in step(log, "-r function/requirements.txt")
    assert "CACHED" not in step(log, "COPY --chown=app:app function/ function/")
    assert "CACHED" not in step(log, "python -m compileall")


def test_two_builds_at_once_within_the_limit_both_succeed(
    builder: BuildkitBuilder, engine: Engine, tmp_path: Path
) -> None:
    images = [builder.ref(f"concurrent-{i}", "v1") for i in range(2)]
    bodies = [
        make_tar(hello_context(tmp_path, f"# function {i} {time.time_ns()}"), image)
        for i, image in enumerate(images)
    ]
    results: list[requests.Response | None] = [None, None]

    def post(i: int) -> None:
        results[i] = builder.post(bodies[i])

    threads = [threading.Thread(target=post, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(REQUEST_TIMEOUT)
    for image, response in zip(images, results, strict=True):
        assert response is not None, f"{image}: no answer"
        assert response.status_code == 200, response.json()["log"][-30:]
        assert "v1" in registry_tags(engine, image)


def _files_containing(engine: Engine, image: str, needle: bytes) -> list[str]:
    """Paths, in any layer of ``image`` (``docker save``), whose content holds ``needle``,
    and any ``run/secrets/`` entry."""
    found: list[str] = []
    saved = subprocess.Popen(
        [engine.docker_cli, "save", image], env=engine.env(), stdout=subprocess.PIPE
    )
    assert saved.stdout is not None
    try:
        with tarfile.open(fileobj=saved.stdout, mode="r|") as outer:
            for entry in outer:
                if not entry.name.endswith("layer.tar"):
                    continue
                layer = outer.extractfile(entry)
                assert layer is not None
                with tarfile.open(fileobj=layer, mode="r|") as files:
                    for item in files:
                        if item.name.startswith("run/secrets/") and item.name != "run/secrets/":
                            found.append(item.name)
                        if item.isreg():
                            content = files.extractfile(item)
                            if content is not None and needle in content.read():
                                found.append(item.name)
    finally:
        saved.stdout.close()
        saved.wait(60)
    return found


def test_extra_ca_reaches_the_build_as_a_secret_and_never_the_pushed_image(
    builder: BuildkitBuilder, engine: Engine, tmp_path: Path
) -> None:
    marker = builder.extra_ca.splitlines()[3]  # a line of the certificate's base64
    context = tmp_path / "ca-check"
    context.mkdir()
    # The marker comes in through a bind mount of the context, so nothing but the secret
    # could put it into the image.
    (context / "marker.txt").write_bytes(marker + b"\n")
    (context / "Dockerfile").write_text(
        textwrap.dedent(
            """\
            ARG BASE_IMAGE
            FROM ${BASE_IMAGE}
            RUN --mount=type=secret,id=ca-certificates \\
                --mount=type=bind,source=marker.txt,target=/tmp/marker.txt \\
                grep -qFf /tmp/marker.txt /run/secrets/ca-certificates \\
                && echo "extra CA mounted: $(grep -c 'BEGIN CERTIFICATE' /run/secrets/ca-certificates) certificates"
            """
        )
    )
    image = builder.ref("ca-check", "v1")
    response = builder.post(make_tar(context, image))
    log = response.json()["log"]
    assert response.status_code == 200, log[-30:]
    assert any("extra CA mounted:" in line for line in log)

    engine.docker("rmi", image)
    engine.docker("pull", image)  # what the registry holds
    assert _files_containing(engine, image, marker) == []
    history = engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    inspect = engine.docker("image", "inspect", image).stdout
    for text in (history, inspect):
        assert marker.decode() not in text
        assert "builder/buildkit/ca-certificates.crt" not in text


def test_template_image_holds_neither_the_ca_bundle_nor_the_secret(
    builder: BuildkitBuilder, engine: Engine, tmp_path: Path
) -> None:
    marker = builder.extra_ca.splitlines()[3]
    image = builder.ref("hello", "no-secret")
    response = builder.post(make_tar(hello_context(tmp_path, f"# {time.time_ns()}"), image))
    assert response.status_code == 200, response.json()["log"][-30:]
    engine.docker("rmi", image)
    engine.docker("pull", image)
    assert _files_containing(engine, image, marker) == []
    history = engine.docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert marker.decode() not in history
    assert str(builder.state_dir) not in history
