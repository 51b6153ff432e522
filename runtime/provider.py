"""The seam between the gateway and whatever runs functions.

The gateway speaks the OpenFaaS API; a provider turns deployments into running
replicas. Both providers are :class:`runtime.providers.replicas.ReplicaProvider` (rollout,
drain, restart, scale, state) with a launcher for what a replica is: an OS process
(``providers/process.py``, the default) or a container (``providers/container.py``,
``OFC_PROVIDER=docker``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from sdk.openfaas import FunctionDeployment, FunctionStatus

__all__ = [
    "Endpoint",
    "FunctionDeployment",
    "FunctionStatus",
    "Provider",
    "ProviderError",
    "FunctionNotFound",
    "FunctionExists",
    "InvalidDeployment",
    "SecretNotFound",
]


class ProviderError(Exception):
    """A request the provider refuses; ``status`` is the HTTP status the gateway answers."""

    status = 500


class FunctionNotFound(ProviderError):
    status = 404


class FunctionExists(ProviderError):
    status = 409


class InvalidDeployment(ProviderError):
    status = 400


class SecretNotFound(ProviderError):
    status = 404


class Endpoint:
    """Where one ready replica accepts HTTP: a loopback address on this runtime.

    ``inflight`` is kept by the gateway (incremented before a call, decremented after),
    so a provider replacing this replica can wait for it to reach zero before
    stopping the process: no request is cut off by an update.
    """

    __slots__ = ("host", "port", "replica_id", "inflight", "timeout")

    def __init__(self, host: str, port: int, replica_id: str, timeout: float | None = None) -> None:
        self.host = host
        self.port = port
        self.replica_id = replica_id
        self.inflight = 0
        # The function's own limit for one call (its ``exec_timeout``), if it set one.
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Endpoint({self.replica_id} at {self.host}:{self.port}, inflight={self.inflight})"


class Provider(Protocol):
    """What the gateway needs from a function runtime.

    Deploy and update return once the deployment is recorded; replicas become
    available asynchronously (``available_replicas`` counts the healthy ones), as on
    OpenFaaS. ``endpoints`` is on the hot path and must not block or allocate much.
    """

    async def start(self) -> None:
        """Restore recorded deployments (after a restart) and begin supervising them."""

    async def close(self) -> None:
        """Stop every replica this provider started."""

    async def deploy(self, spec: FunctionDeployment) -> None:
        """Create a function; :class:`FunctionExists` if the name is taken."""

    async def update(self, spec: FunctionDeployment) -> None:
        """Replace a function without dropping requests; :class:`FunctionNotFound` if absent."""

    async def remove(self, name: str) -> None:
        """Stop and forget a function; :class:`FunctionNotFound` if absent."""

    async def scale(self, name: str, replicas: int) -> None:
        """Set the desired replica count (0 allowed: the function stays deployed)."""

    def list(self) -> list[FunctionStatus]:
        """Every deployed function."""
        ...

    def get(self, name: str) -> FunctionStatus:
        """One function; :class:`FunctionNotFound` if absent."""
        ...

    def endpoints(self, name: str) -> list[Endpoint] | None:
        """Ready replicas of ``name`` (possibly empty), or ``None`` when it is not deployed."""
        ...

    def log_lines(
        self, name: str, *, tail: int, since: float | None, follow: bool
    ) -> AsyncIterator[dict[str, str]]:
        """Log records ``{name, namespace, instance, timestamp, text}`` of one function."""
        ...


# How a provider reports the end of a rollout in the function's log (instance
# ``deploy``), so ``ofc deploy`` can follow it: one of these prefixes, then details.
DEPLOY_LOG_INSTANCE = "deploy"
ROLLOUT_READY = "[ofc] ready:"
ROLLOUT_FAILED = "[ofc] failed:"
