"""The container launcher: each replica is a container of the deployment's registry image.

Chosen by ``OFC_PROVIDER=docker``. A deployment's ``image`` is a registry reference
(``127.0.0.1:5000/alice/repo-hello:main-0123456789ab``). A version is prepared by
making sure the image is on the engine: pulled when absent, or every time when its
tag is ``latest`` or absent (``OFC_DOCKER_PULL`` changes that), progress in the
function's log as instance ``pull``; the version then runs that image's ID, so a
later pull of the same tag does not change a version already serving.

Each replica is one container (:func:`runtime.providers.container_spec.container_body`):
host networking on a free loopback port, the secrets of its version bind-mounted
read-only (the runtime's ``run/<function>/<version>/secrets``: the engine must see the
runtime's files, i.e. run on this machine), output followed into the function's log,
exit observed with ``POST /containers/{id}/wait``. Rollout, drain, restart and scale
are :mod:`runtime.providers.replicas`'.

Containers do not die with the runtime. Each carries the label
``com.openfaas-cloud.runtime=<id>``, the id kept in ``$OFC_STATE_DIR/runtime-id``: at
start every container with it is removed (a runtime that starts has none running:
what a crash left behind would only hold ports and memory, and ``functions.json``
brings the functions back), and on shutdown every replica is stopped and removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import DOCKER_PULL_POLICIES
from runtime.logs import LogStore
from runtime.provider import Endpoint, InvalidDeployment
from runtime.providers.container_spec import (
    LABEL_RUNTIME,
    ReplicaLabels,
    container_body,
    parse_cpu,
    parse_image_reference,
    parse_memory,
)
from runtime.providers.engine_api import EngineClient, EngineError, LineSplitter
from runtime.providers.replicas import (
    Generation,
    LaunchError,
    Output,
    ReplicaProvider,
    ReplicaProviderConfig,
    RolloutFailed,
)
from runtime.secrets import SecretStore
from sdk.openfaas import FunctionDeployment

__all__ = ["ContainerLauncher", "make_docker_provider", "runtime_id"]

log = logging.getLogger(__name__)

OUTPUT_GRACE = 2.0  # how long the output may trail the container's exit
STDOUT, STDERR = 1, 2


def runtime_id(state_dir: Path) -> str:
    """This runtime's id, made once and kept in ``<state_dir>/runtime-id``."""
    path = state_dir / "runtime-id"
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if found:
        return found
    made = secrets.token_hex(8)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    return made


@dataclass(frozen=True)
class _ContainerPlan:
    image_id: str  # sha256:..., what every replica of the version runs


class _ContainerInstance:
    """One replica container: its exit awaited and its output followed from the start."""

    def __init__(self, client: EngineClient, container_id: str, output: Output) -> None:
        self.client = client
        self.id = container_id
        self.released = False
        self.exit = asyncio.create_task(self._wait())
        self.reader = asyncio.create_task(self._pump(output))

    async def _wait(self) -> int:
        try:
            return await self.client.wait_container(self.id)
        except EngineError as exc:
            log.warning("lost sight of container %s: %s", self.id[:12], exc)
            return -1

    async def _pump(self, output: Output) -> None:
        streams = {STDOUT: LineSplitter(), STDERR: LineSplitter()}
        try:
            async for stream, payload in self.client.container_output(self.id):
                for line in streams.get(stream, streams[STDOUT]).feed(payload):
                    output.line(line)
        except EngineError as exc:
            log.warning("output of container %s ended: %s", self.id[:12], exc)
        finally:
            for splitter in streams.values():
                for line in splitter.flush():
                    output.line(line)
            output.closed()
        # The output ends as the container stops. If it ended while the container
        # runs (an engine hiccup), the replica has left rotation: end it, so that the
        # supervisor sees an exit and restarts it, rather than leave it out for good.
        done, _ = await asyncio.wait({self.exit}, timeout=OUTPUT_GRACE)
        if not done:
            log.warning("container %s: output ended while it runs; killing it", self.id[:12])
            await self.kill()

    async def wait(self) -> int:
        code = await self.exit
        await self._finish_output()
        return code

    async def kill(self) -> None:
        try:
            await self.client.kill_container(self.id)
        except EngineError as exc:
            log.warning("cannot kill container %s: %s", self.id[:12], exc)

    async def terminate(self, grace: float) -> None:
        try:
            await self.client.stop_container(self.id, grace)
        except EngineError as exc:
            log.warning("cannot stop container %s: %s", self.id[:12], exc)

    async def release(self) -> None:
        if self.released:  # reached from the replica's end and from its stop
            return
        self.released = True
        await self._finish_output()
        if not self.exit.done():
            self.exit.cancel()
        await asyncio.gather(self.exit, return_exceptions=True)
        try:
            await self.client.remove_container(self.id)
        except EngineError as exc:
            # The next start's sweep removes it.
            log.warning("cannot remove container %s: %s", self.id[:12], exc)

    async def _finish_output(self) -> None:
        if not self.reader.done():
            await asyncio.wait({self.reader}, timeout=OUTPUT_GRACE)
        if not self.reader.done():
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)


class ContainerLauncher:
    """Prepares versions as pulled images and runs replicas as containers."""

    # The function runs as the image's user (uid 10001 in the template), not as the
    # runtime's: the files are world-readable, inside a run_dir only the runtime can enter.
    secret_dir_mode = 0o755
    secret_file_mode = 0o444

    def __init__(self, client: EngineClient, *, state_dir: Path, pull: str = "auto") -> None:
        if pull not in DOCKER_PULL_POLICIES:
            raise ValueError(f"pull={pull!r}: expected one of {', '.join(DOCKER_PULL_POLICIES)}")
        self.client = client
        self.state_dir = state_dir
        self.pull = pull
        self.runtime_id = ""
        self.cpus = 0

    async def start(self) -> None:
        """Negotiate the API version and remove containers a previous run left behind."""
        version = await self.client.negotiate()
        self.cpus = int((await self.client.info()).get("NCPU") or 0)
        self.runtime_id = runtime_id(self.state_dir)
        removed = await self._sweep()
        log.info(
            "docker engine at %s (API %s, runtime id %s)%s",
            self.client.socket_path,
            version,
            self.runtime_id,
            f"; removed {removed} container(s) left by a previous run" if removed else "",
        )

    async def close(self) -> None:
        # Every replica has been stopped and removed; this catches one whose start was
        # cut short by the shutdown.
        try:
            await self._sweep()
        except EngineError as exc:
            log.warning("cannot sweep containers at shutdown: %s", exc)

    async def _sweep(self) -> int:
        found = await self.client.list_containers({LABEL_RUNTIME: self.runtime_id})
        for container in found:
            await self.client.remove_container(container["Id"])
        return len(found)

    def validate(self, spec: FunctionDeployment) -> None:
        try:
            parse_image_reference(spec.image)
        except ValueError as exc:
            raise InvalidDeployment(str(exc)) from None
        memory, cpu = (spec.limits.memory, spec.limits.cpu) if spec.limits else ("", "")
        try:
            if memory:
                parse_memory(memory)
            nano_cpus = parse_cpu(cpu) if cpu else 0
        except ValueError as exc:
            raise InvalidDeployment(f"limits: {exc}") from None
        # The engine would refuse it at each replica's start; say so at the deploy.
        if self.cpus and nano_cpus > self.cpus * 10**9:
            raise InvalidDeployment(
                f"limits: cpu {cpu!r} is more than the {self.cpus} CPU(s) of the engine"
            )

    async def prepare(
        self, name: str, spec: FunctionDeployment, progress: Callable[[str, str], None]
    ) -> _ContainerPlan:
        try:
            ref = parse_image_reference(spec.image)
        except ValueError as exc:  # recorded by another provider before a switch to this one
            raise RolloutFailed(str(exc)) from None
        try:
            image = await self.client.inspect_image(spec.image)
            # A bare image ID (sha256:...) names no repository to pull from.
            wanted = bool(ref.name) and (
                self.pull == "always" or (self.pull == "auto" and (image is None or ref.floating))
            )
            if wanted:
                await self._pull(spec.image, ref.name, ref.pull_tag, progress)
                image = await self.client.inspect_image(spec.image)
        except EngineError as exc:
            raise RolloutFailed(f"image {spec.image!r}: {exc}") from None
        if image is None:
            hint = "an image ID cannot be pulled" if not ref.name else "OFC_DOCKER_PULL=never"
            raise RolloutFailed(f"image {spec.image!r} is not on the engine ({hint})")
        return _ContainerPlan(image_id=str(image["Id"]))

    async def _pull(
        self, image: str, name: str, tag: str, progress: Callable[[str, str], None]
    ) -> None:
        progress("pull", f"[ofc] pulling {image}")
        last = ""

        def on_event(event: dict[str, Any]) -> None:
            nonlocal last
            if "progress" in event:  # byte counts of one layer: too many to keep
                return
            status = str(event.get("status", ""))
            line = f"{event['id']}: {status}" if event.get("id") else status
            if line and line != last:
                progress("pull", line)
                last = line

        try:
            await self.client.pull_image(name, tag, on_event)
        except EngineError as exc:
            if exc.status == 0:
                raise
            raise RolloutFailed(f"pulling image {image!r} failed: {exc}") from None

    async def launch(
        self, gen: Generation, replica_id: str, port: int, output: Output
    ) -> _ContainerInstance:
        plan: _ContainerPlan = gen.plan
        labels = ReplicaLabels(self.runtime_id, gen.spec.service, gen.number, replica_id)
        body = container_body(
            gen.spec, image_id=plan.image_id, port=port, labels=labels, secrets_dir=gen.secrets_dir
        )
        # Unique even when a container of a crashed replica could not be removed.
        name = f"ofc-{replica_id}-{secrets.token_hex(3)}"
        try:
            container_id = await self.client.create_container(name, body)
        except EngineError as exc:
            raise LaunchError(f"cannot create its container: {exc}") from None
        except asyncio.CancelledError:
            # Cancelled while the engine may have made it: remove it by its name.
            await asyncio.shield(self._remove_quietly(name))
            raise
        try:
            await self.client.start_container(container_id)
        except BaseException as exc:
            # Failed or cancelled (a superseded rollout): leave no container behind.
            await asyncio.shield(self._remove_quietly(container_id))
            if isinstance(exc, EngineError):
                raise LaunchError(f"cannot start its container: {exc}") from None
            raise
        log.debug("replica %s runs in container %s on port %d", replica_id, container_id[:12], port)
        return _ContainerInstance(self.client, container_id, output)

    async def _remove_quietly(self, container_id: str) -> None:
        try:
            await self.client.remove_container(container_id)
        except EngineError as exc:
            log.warning("cannot remove container %s: %s", container_id[:12], exc)


def make_docker_provider(
    config: ReplicaProviderConfig,
    *,
    docker_socket: str,
    pull: str,
    secrets: SecretStore,
    logs: LogStore,
    on_endpoint_closed: Callable[[Endpoint], None] = lambda _: None,
) -> ReplicaProvider:
    """The Docker provider (``OFC_PROVIDER=docker``) on the engine at ``docker_socket``."""
    launcher = ContainerLauncher(EngineClient(docker_socket), state_dir=config.state_dir, pull=pull)
    return ReplicaProvider(
        config, launcher, secrets=secrets, logs=logs, on_endpoint_closed=on_endpoint_closed
    )
