"""The git remote's configuration, and what it does when the platform's secrets are missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gitserver.config import ConfigError, GitServerConfig
from tests.conftest import REPO
from tests.helpers import free_port


def test_defaults_follow_the_state_directory_and_the_gateway_port(tmp_path: Path) -> None:
    cfg = GitServerConfig.from_env({"OFC_STATE_DIR": str(tmp_path), "OFC_GATEWAY_PORT": "9090"})

    assert (cfg.host, cfg.port, cfg.public_url) == ("127.0.0.1", 8082, None)
    assert cfg.gateway_url == "http://127.0.0.1:9090"
    assert cfg.repos_dir == tmp_path / "git" / "repos"
    assert cfg.users_file == tmp_path / "git" / "users.json"
    assert cfg.webhook_secret_file == tmp_path / "secrets" / "functions" / "github-webhook-secret"
    assert cfg.payload_secret_file == tmp_path / "secrets" / "functions" / "payload-secret"


def test_urls_lose_their_trailing_slash(tmp_path: Path) -> None:
    cfg = GitServerConfig.from_env(
        {
            "OFC_STATE_DIR": str(tmp_path),
            "OFC_GATEWAY_URL": "http://gw:8080/",
            "OFC_GIT_PUBLIC_URL": "https://git.example.com/",
        }
    )

    assert (cfg.gateway_url, cfg.public_url) == ("http://gw:8080", "https://git.example.com")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("OFC_GIT_PORT", "80a", "OFC_GIT_PORT='80a': expected a whole number"),
        ("OFC_GIT_PORT", "70000", "OFC_GIT_PORT=70000: must be at most 65535"),
        ("OFC_GATEWAY_URL", "gateway:8080", "OFC_GATEWAY_URL='gateway:8080': expected an http(s) URL"),
        ("OFC_GIT_PUBLIC_URL", "ftp://git.example.com", "OFC_GIT_PUBLIC_URL='ftp://git.example.com'"),
        ("OFC_GIT_PUBLIC_URL", "http://me:hunter2@git", "OFC_GIT_PUBLIC_URL: a URL with credentials"),
        ("OFC_GIT_EVENT_TIMEOUT", "0", "OFC_GIT_EVENT_TIMEOUT='0': must be above 0"),
        ("OFC_GIT_EVENT_RETRY_DELAY", "soon", "OFC_GIT_EVENT_RETRY_DELAY='soon'"),
    ],
    ids=["port-not-a-number", "port-too-high", "gateway-no-scheme", "public-not-http",
         "public-with-password", "zero-timeout", "delay-not-a-duration"],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_the_variable(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        GitServerConfig.from_env({"OFC_STATE_DIR": str(tmp_path), name: value})

    assert str(raised.value).startswith(message)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("missing", ["github-webhook-secret", "payload-secret"])
def test_the_server_refuses_to_start_without_a_platform_secret(
    tmp_path: Path, missing: str
) -> None:
    functions = tmp_path / "secrets" / "functions"
    functions.mkdir(parents=True)
    for name in {"github-webhook-secret", "payload-secret"} - {missing}:
        (functions / name).write_text("s3cret\n")

    proc = subprocess.run(
        [sys.executable, "-m", "gitserver"],
        cwd=REPO,
        env={**os.environ, "OFC_STATE_DIR": str(tmp_path), "OFC_GIT_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert proc.returncode == 2
    assert f"{functions / missing} does not exist: `ofc up` creates it" in proc.stderr
    assert "s3cret" not in proc.stderr


def test_the_server_exits_2_naming_the_port_when_it_is_taken(tmp_path: Path) -> None:
    functions = tmp_path / "secrets" / "functions"
    functions.mkdir(parents=True)
    for name in ("github-webhook-secret", "payload-secret"):
        (functions / name).write_text("s3cret\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        proc = subprocess.run(
            [sys.executable, "-m", "gitserver"],
            cwd=REPO,
            env={**os.environ, "OFC_STATE_DIR": str(tmp_path), "OFC_GIT_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert proc.returncode == 2
    assert "cannot listen" in proc.stderr and "OFC_GIT_PORT" in proc.stderr
    assert "Traceback" not in proc.stderr
