"""Real engines on loopback: start, answer, push and pull, stop without leftovers.

Each test here starts its own dockerd and registry (ofc.engine.start_engine) in a
temporary directory with a free registry port, beside the session's engine, and stops
them by PID; they need root and Debian's docker.io and docker-registry.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ofc.base_image import ensure_base_image
from ofc.engine import (
    EngineError,
    EngineInfo,
    NetworkSnapshot,
    can_run_engine,
    engine_paths,
    engine_tree,
    load_engine,
    mounts_under,
    start_engine,
    stop_engine,
)
from tests.containers import Engine
from tests.helpers import OFC, alive, free_port

REASON = can_run_engine()
pytestmark = [
    pytest.mark.containers,
    pytest.mark.skipif(REASON is not None, reason=f"cannot run dockerd here: {REASON}"),
]


def client(info: EngineInfo) -> Engine:
    return Engine(docker_host=info.docker_host, registry=info.registry)


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineInfo]:
    """One engine for this module's read-only checks."""
    directory = tmp_path_factory.mktemp("own-engine")
    info = start_engine(directory, registry_port=free_port(), die_with_parent=True)
    yield info
    assert not stop_engine(directory).leftover


def listening(port: int) -> list[str]:
    """Local addresses listening on TCP ``port``, from /proc/net/tcp and tcp6 (hex, as
    the kernel writes them: 0100007F is 127.0.0.1)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.append(addr)
    return found


def test_docker_api_answers_on_the_engines_own_socket(own: EngineInfo):
    info = client(own).docker("info", "--format", "{{json .}}")
    data = json.loads(info.stdout)
    assert data["DockerRootDir"] == str(own.dir / "root")
    assert data["Driver"] == "overlay2"
    assert own.socket.is_socket() and len(str(own.socket)) < 108


def test_registry_answers_on_loopback_and_listens_nowhere_else(own: EngineInfo):
    port = int(own.registry.rsplit(":", 1)[1])
    response = requests.get(f"http://{own.registry}/v2/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert listening(port) == ["0100007F"]  # not 00000000 (every IPv4 address), not [::]


def test_an_image_pushed_to_the_registry_can_be_pulled_back(own: EngineInfo, tmp_path: Path):
    docker = client(own)
    payload = tmp_path / "hello.txt"
    payload.write_text(f"hello {uuid.uuid4()}\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(payload, arcname="hello.txt")
    ref = f"{own.registry}/ofc-test/roundtrip:{uuid.uuid4().hex[:12]}"
    docker.docker("import", str(tmp_path / "rootfs.tar"), ref)
    image_id = docker.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
    docker.docker("push", ref)
    docker.docker("image", "rm", ref)
    assert not docker.image_exists(ref)

    docker.docker("pull", ref)
    assert docker.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip() == image_id
    container = docker.docker("create", ref, "none").stdout.strip()
    try:
        docker.docker("cp", f"{container}:/hello.txt", str(tmp_path / "copied.txt"))
    finally:
        docker.docker("rm", container)
    assert (tmp_path / "copied.txt").read_text() == payload.read_text()
    catalog = requests.get(f"http://{own.registry}/v2/_catalog", timeout=5).json()
    assert "ofc-test/roundtrip" in catalog["repositories"]


def test_a_second_start_in_the_same_dir_is_refused(own: EngineInfo):
    with pytest.raises(EngineError, match="already running"):
        start_engine(own.dir, registry_port=free_port())
    assert load_engine(own.dir) == own  # the running engine's state is untouched


def test_start_refuses_a_registry_port_in_use_and_leaves_nothing(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(EngineError, match=f"127.0.0.1:{port} is in use"):
            start_engine(tmp_path / "engine", registry_port=port)
    assert load_engine(tmp_path / "engine") is None
    assert not (tmp_path / "engine" / "docker.pid").exists()


def test_a_dockerd_that_exits_is_reported_with_its_log(tmp_path: Path):
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\necho 'failed to start daemon: no luck' >&2\nexit 1\n")
    fake.chmod(0o755)
    directory = tmp_path / ("deep-" * 12) / "engine"  # sockets in a folder under /tmp
    with pytest.raises(EngineError) as failure:
        start_engine(directory, registry_port=free_port(), dockerd=str(fake))
    message = str(failure.value)
    assert message.startswith("dockerd exited")
    assert "failed to start daemon: no luck" in message
    assert load_engine(directory) is None
    assert not engine_paths(directory)[0].parent.exists()


def test_stop_leaves_no_process_container_mount_or_link(tmp_path: Path):
    links_before = NetworkSnapshot.take().links
    directory = tmp_path / "engine"
    info = start_engine(directory, registry_port=free_port(), die_with_parent=True)
    try:
        docker = client(info)
        ensure_base_image(info.docker_host)  # from the cached rootfs: seconds
        started = docker.docker(
            "run", "-d", "--rm", "--network", "none", "--label", "ofc-test=stop",
            docker.base_image, "sleep", "300",
        )  # fmt: skip
        container = started.stdout.strip()
        pid = int(docker.docker("inspect", "--format", "{{.State.Pid}}", container).stdout)
        tree = engine_tree(info)
    except BaseException:
        stop_engine(directory)
        raise
    names = {r.name for r in tree}
    assert {"dockerd", "containerd", "registry", "containerd-shim"} <= names
    assert pid in {r.pid for r in tree}  # the container's process is in the recorded tree

    report = stop_engine(directory)
    assert report.leftover == []
    assert [r.describe() for r in tree if r.owned()] == []
    assert not alive(pid)
    assert NetworkSnapshot.take().links == links_before
    assert mounts_under([directory, info.exec_root]) == []
    assert load_engine(directory) is None and not info.socket.exists()


def test_cli_engine_up_status_down(tmp_path: Path):
    # A deep dir: its sockets go to a short folder under /tmp, removed by `down`.
    directory, port = tmp_path / ("deep-" * 12) / "engine", free_port()
    sock = engine_paths(directory)[0]
    assert sock.parent != directory

    def ofc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OFC, "engine", *args, "--dir", str(directory)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    up = ofc("up", "--registry-port", str(port))
    try:
        assert up.returncode == 0, up.stderr
        assert up.stdout.splitlines() == [
            f"DOCKER_HOST=unix://{sock}",
            f"OFC_REGISTRY=127.0.0.1:{port}",
        ]
        pids = load_engine(directory).pids
        status = ofc("status")
        assert status.returncode == 0, status.stderr
        assert f"dockerd (pid {pids['dockerd']}): running" in status.stderr
        assert f"registry http://127.0.0.1:{port}/v2/: answering" in status.stderr
        again = ofc("up")
        assert again.returncode == 0 and "already running" in again.stderr
        assert again.stdout == up.stdout
    finally:
        down = ofc("down")
    assert down.returncode == 0, down.stderr
    assert f"dockerd (pid {pids['dockerd']}) stopped" in down.stderr
    assert not any(alive(pid) for pid in pids.values())
    assert not sock.exists() and not sock.parent.exists()
    after = ofc("status")
    assert (after.returncode, after.stderr) == (1, f"no engine in {directory}\n")
