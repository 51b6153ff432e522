"""Helpers to run the python3-http template the way the process runtime does.

Each server is a real ``index.py`` subprocess, started from a temporary build
folder (the template with a handler folder copied over ``function/``) on a free
127.0.0.1 port, and stopped by its PID when the fixture ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template" / "python3-http"
FUNCTIONS = Path(__file__).resolve().parent / "functions"
PYTHON = sys.executable  # the dev venv's python, which has flask and waitress

# Variables index.py reads; scrubbed so a developer's shell cannot change a test.
SERVER_ENV = ("port", "bind_address", "threads", "connection_limit", "channel_timeout")


def make_build_folder(dest: Path, handler: Path | None = None, *, package: bool = False) -> Path:
    """Copy the template to ``dest`` and ``handler``'s files over ``function/``.

    ``package=True`` adds ``function/__init__.py`` as the Dockerfile does; the
    process runtime's build folders have none.
    """
    shutil.copytree(TEMPLATE, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    if handler is not None:
        shutil.copytree(handler, dest / "function", dirs_exist_ok=True)
    if package:
        (dest / "function" / "__init__.py").touch()
    return dest


# Interpreter settings that would hide what index.py does itself (line-buffered
# output, no bytecode in the build folder) or let the repository's sdk/ leak in.
PYTHON_ENV = ("PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the template's variables, HOSTNAME,
    ``PYTHON_ENV`` or PYTEST_*, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in (*SERVER_ENV, *PYTHON_ENV, "HOSTNAME") and not key.startswith("PYTEST_")
    }
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningFunction:
    """One started ``index.py``: its URL, process and captured output files."""

    url: str
    port: int
    build: Path
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def wait_for_output(self, stream: str, text: str, timeout: float = 3.0) -> str:
        """Poll ``stdout`` or ``stderr`` until it contains ``text``; return all of it."""
        read = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        while text not in (output := read()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in {stream} after {timeout}s:\n{output}")
            time.sleep(0.02)
        return output

    def stop(self) -> int:
        """SIGTERM by PID, SIGKILL if it lingers; return the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_function(build: Path, env: Mapping[str, str] | None = None) -> RunningFunction:
    """Start ``build/index.py`` on a free loopback port; return once /_/health is 200.

    The working directory is deliberately not the build folder: index.py must find
    ``function/`` from its own location.
    """
    port = free_port()
    logs = build.parent / f"{build.name}-logs"
    logs.mkdir()
    stdout_path, stderr_path = logs / "stdout", logs / "stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [PYTHON, str(build / "index.py")],
            cwd=logs,
            env=clean_env({"port": str(port), "bind_address": "127.0.0.1", **(env or {})}),
            stdout=out,
            stderr=err,
        )
    running = RunningFunction(
        f"http://127.0.0.1:{port}", port, build, process, stdout_path, stderr_path
    )
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise AssertionError(f"index.py exited with {process.returncode}:\n{running.stderr()}")
        try:
            if requests.get(f"{running.url}/_/health", timeout=1).status_code == 200:
                return running
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            running.stop()
            raise AssertionError(f"index.py not healthy after 15s:\n{running.stderr()}")
        time.sleep(0.05)
