"""Choosing the provider: ``OFC_PROVIDER``, ``OFC_DOCKER_HOST`` and ``OFC_DOCKER_PULL``, checked at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.config import ConfigError, RuntimeConfig
from tests.helpers import REPO, free_port


@pytest.fixture
def listening_socket(tmp_path: Path) -> Iterator[Path]:
    """A unix socket file at ``<tmp>/state/engine/docker.sock`` (where `ofc engine` puts one)."""
    path = tmp_path / "state" / "engine" / "docker.sock"
    path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


def config(tmp_path: Path, **env: str) -> RuntimeConfig:
    return RuntimeConfig.from_env({"OFC_STATE_DIR": str(tmp_path / "state"), **env})


def test_provider_defaults_to_process_without_looking_for_an_engine(tmp_path: Path) -> None:
    cfg = config(tmp_path, OFC_DOCKER_HOST="unix:///nowhere/docker.sock")

    assert (cfg.provider, cfg.docker_socket) == ("process", "")


def test_docker_provider_defaults_to_the_engine_socket_in_the_state_directory(
    tmp_path: Path, listening_socket: Path
) -> None:
    cfg = config(tmp_path, OFC_PROVIDER="docker")

    assert (cfg.provider, cfg.docker_socket, cfg.docker_pull) == (
        "docker",
        str(listening_socket),
        "auto",
    )


def test_docker_host_names_the_socket_to_use(tmp_path: Path, listening_socket: Path) -> None:
    cfg = config(tmp_path, OFC_PROVIDER="docker", OFC_DOCKER_HOST=f"unix://{listening_socket}")

    assert cfg.docker_socket == str(listening_socket)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OFC_PROVIDER": "kubernetes"}, "OFC_PROVIDER='kubernetes': expected 'process', 'docker' or 'hybrid'"),
        ({"OFC_PROVIDER": "docker", "OFC_DOCKER_HOST": "tcp://127.0.0.1:2375"},
         "OFC_DOCKER_HOST='tcp://127.0.0.1:2375': expected unix:///path/to/docker.sock"),
        ({"OFC_PROVIDER": "docker", "OFC_DOCKER_HOST": "/var/run/docker.sock"},
         "expected unix:///path/to/docker.sock"),
        ({"OFC_PROVIDER": "docker", "OFC_DOCKER_HOST": "unix:///nowhere/docker.sock"},
         "no socket at /nowhere/docker.sock: start the Docker engine"),
        ({"OFC_DOCKER_PULL": "sometimes"},
         "OFC_DOCKER_PULL='sometimes': expected 'auto', 'always' or 'never'"),
    ],
    ids=["unknown-provider", "tcp-host", "path-without-scheme", "no-socket", "bad-pull-policy"],
)  # fmt: skip
def test_bad_provider_settings_are_refused_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        config(tmp_path, **env)


def test_gateway_with_docker_provider_and_no_engine_exits_2_saying_so(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "OFC_STATE_DIR": str(tmp_path / "state"),
        "OFC_GATEWAY_PORT": str(free_port()),
        "OFC_PROVIDER": "docker",
        "OFC_DOCKER_HOST": f"unix://{tmp_path}/missing.sock",
    }

    proc = subprocess.run(
        [sys.executable, "-m", "runtime"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=30,
    )  # fmt: skip

    assert proc.returncode == 2
    assert f"no socket at {tmp_path}/missing.sock" in proc.stderr


def test_gateway_with_an_engine_socket_nobody_answers_exits_2_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # a socket file with no listener: connections are refused
        env = {
            **os.environ,
            "OFC_STATE_DIR": str(tmp_path / "state"),
            "OFC_PROVIDER": "docker",
            "OFC_DOCKER_HOST": f"unix://{path}",
            "OFC_GATEWAY_PORT": str(free_port()),
        }
        result = subprocess.run(
            [sys.executable, "-m", "runtime"], cwd=REPO, env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"the Docker engine at {path} does not answer" in result.stderr
    assert "Traceback" not in result.stderr
