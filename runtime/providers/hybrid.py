"""The hybrid provider: local artifacts run as processes, registry images as containers.

On one machine with a Docker engine, ``ofc up --containers`` wants users' functions
(built by the builder's ``buildkit`` backend, pushed to the registry) isolated in
containers, while the platform's own functions, deployed by ``ofc deploy`` from the
local artifact store, keep running as processes beside the state directory they share
(pipeline logs, the git remote's repositories). The choice is made per version: an
image the artifact store resolves is a process, any other a container.

Secret files get the container launcher's modes (world-readable files in a folder of
the run directory only the runtime can enter), which is what both kinds need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.artifacts import ArtifactError, ArtifactNotFound, ArtifactStore
from runtime.providers.container import ContainerLauncher
from runtime.providers.process import ProcessLauncher
from runtime.providers.replicas import Generation, Instance, Output
from sdk.openfaas import FunctionDeployment

__all__ = ["HybridLauncher"]


@dataclass(frozen=True)
class _Plan:
    launcher: ProcessLauncher | ContainerLauncher
    plan: Any


class HybridLauncher:
    """Delegates each version to the process or the container launcher (module docstring)."""

    secret_dir_mode = ContainerLauncher.secret_dir_mode
    secret_file_mode = ContainerLauncher.secret_file_mode

    def __init__(
        self, processes: ProcessLauncher, containers: ContainerLauncher, artifacts: ArtifactStore
    ) -> None:
        self.processes = processes
        self.containers = containers
        self.artifacts = artifacts

    def launcher_for(self, spec: FunctionDeployment) -> ProcessLauncher | ContainerLauncher:
        """The process launcher when the artifact store has ``spec.image``, else containers."""
        try:
            self.artifacts.resolve(spec.image)
        except (ArtifactNotFound, ArtifactError):
            return self.containers
        return self.processes

    async def start(self) -> None:
        await self.processes.start()
        await self.containers.start()

    async def close(self) -> None:
        await self.processes.close()
        await self.containers.close()

    def validate(self, spec: FunctionDeployment) -> None:
        self.launcher_for(spec).validate(spec)

    async def prepare(
        self, name: str, spec: FunctionDeployment, progress: Callable[[str, str], None]
    ) -> _Plan:
        launcher = self.launcher_for(spec)
        return _Plan(launcher, await launcher.prepare(name, spec, progress))

    async def launch(self, gen: Generation, replica_id: str, port: int, output: Output) -> Instance:
        wrapped: _Plan = gen.plan
        inner = Generation(
            gen.number, gen.spec, gen.run_dir, gen.secrets_dir, wrapped.plan, gen.timeout
        )
        return await wrapped.launcher.launch(inner, replica_id, port, output)
