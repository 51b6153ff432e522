"""The Docker engine, registry and base image the container tests run against.

Interface shared by every container test (builder's buildkit backend, the Docker
provider, end-to-end runs): the session fixture ``engine`` (tests/conftest.py) yields one
:class:`Engine`, or skips the test saying why no engine can run here.

Where the engine comes from, first match wins:

1. ``OFC_TEST_DOCKER_HOST`` (+ ``OFC_TEST_REGISTRY``): an engine someone else started
   (``make test`` starts one with ``ofc engine up`` and stops it in its exit trap);
2. otherwise, when this machine can run dockerd (root, ``dockerd`` and
   ``docker-registry`` installed), the fixture starts its own on loopback for the
   session and stops it by PID at the end (:func:`ofc.engine.start_engine`);
3. otherwise the container tests are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Engine", "engine_from_env"]

BASE_IMAGE = "ofc/python3-base:bookworm"
DEBIAN_DOCKER_CLI = "/usr/bin/docker"  # /usr/local/bin/docker has no buildx: not for builds


@dataclass(frozen=True)
class Engine:
    """A running dockerd and registry on loopback."""

    docker_host: str  # e.g. "unix:///root/.cache/ofc/engine/docker.sock"
    registry: str  # e.g. "127.0.0.1:5000" (loopback registries need no TLS in Docker)
    docker_cli: str = DEBIAN_DOCKER_CLI
    base_image: str = BASE_IMAGE

    def env(self) -> dict[str, str]:
        """Environment for a ``docker`` client process talking to this engine."""
        return {**os.environ, "DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"}

    def docker(
        self, *args: str, check: bool = True, timeout: float = 300.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the Debian docker client against this engine; output captured as text."""
        return subprocess.run(
            [self.docker_cli, *args],
            env=self.env(),
            check=check,
            timeout=timeout,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
        )

    def image_exists(self, ref: str) -> bool:
        return self.docker("image", "inspect", ref, check=False).returncode == 0

    def containers(self, filters: Sequence[str] = ()) -> list[str]:
        """IDs of containers (running or not) matching ``label=...``-style filters."""
        args = ["ps", "-aq", "--no-trunc", *(f"--filter={f}" for f in filters)]
        return self.docker(*args).stdout.split()


def engine_from_env() -> Engine | None:
    """The engine named by ``OFC_TEST_DOCKER_HOST``, if any."""
    host = os.environ.get("OFC_TEST_DOCKER_HOST", "")
    if not host:
        return None
    return Engine(
        docker_host=host,
        registry=os.environ.get("OFC_TEST_REGISTRY", "127.0.0.1:5000"),
        docker_cli=os.environ.get("OFC_TEST_DOCKER_CLI", DEBIAN_DOCKER_CLI),
        base_image=os.environ.get("OFC_TEST_BASE_IMAGE", BASE_IMAGE),
    )
