"""`make demo`, the README's first command, keeps working: git push to live on the built-in remote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, free_port

pytestmark = pytest.mark.slow


def test_demo_pushes_the_example_and_prints_its_answer_and_push_to_live(
    tmp_path: Path, venv_dir: Path
) -> None:
    env = {
        **os.environ,
        "OFC_STATE_DIR": str(tmp_path / "state"),
        "OFC_VENV_DIR": str(venv_dir),
        "OFC_GATEWAY_PORT": str(free_port()),
        "OFC_BUILDER_PORT": str(free_port()),
        "OFC_GIT_PORT": str(free_port()),
        "OFC_AUTH_PORT": str(free_port()),
        "OFC_ROUTER_PORT": str(free_port()),
    }
    env.pop("OPENFAAS_URL", None)
    result = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # Pushed and called through the edge-router, at the user-prefixed host.
    router = f"http://127.0.0.1:{env['OFC_ROUTER_PORT']}"
    assert f"git push {router}/git/demo/hello-world.git main" in out
    assert f"http://demo.localhost:{env['OFC_ROUTER_PORT']}/hello?name=demo answered" in out
    assert '{"message": "Hello, demo!"}' in out
    assert '{"message": "Hi again, demo!"}' in out
    assert "push-to-live: " in out and "redeploy: " in out
    token_file = tmp_path / "state" / "git" / "users.json"
    assert token_file.exists()
    # The user's token is handed to git through askpass only: never printed.
    assert "token" not in out.lower()
    # Everything was stopped again.
    assert not (tmp_path / "state" / "gateway.pid").exists()

    # A second run on the same state (a newcomer trying it again) works as well: the
    # demo's repository from the first run does not refuse the new history.
    again = subprocess.run(
        [sys.executable, "scripts/demo.py"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert '{"message": "Hi again, demo!"}' in again.stdout
