"""The embedded runtime's composition root: every object is built here and passed down.

State directory layout (``OFC_STATE_DIR``)::

    secrets/gateway/basic-auth-{user,password}   gateway credentials (generated)
    secrets/functions/<name>                     function secrets (/system/secrets)
    functions.json                               deployments, restored at start
    queue.sqlite3                                durable async calls
    logs/<function>.log                          function logs (ndjson)
    artifacts/                                   built functions, by digest and tag
    venvs/<hash>/                                virtualenvs, by requirements hash (OFC_VENV_DIR)
    run/<function>/<version>/                    per-replica home and secret files
"""

from __future__ import annotations

import logging
from pathlib import Path

from runtime.artifacts import ArtifactStore
from runtime.config import RuntimeConfig
from runtime.gateway.auth import BasicAuth, ensure_credentials
from runtime.gateway.endpoints.async_invoke import make_async_invoke_handler
from runtime.gateway.endpoints.delete_function import make_delete_function_handler
from runtime.gateway.endpoints.deploy_function import make_deploy_function_handler
from runtime.gateway.endpoints.function_status import make_function_status_handler
from runtime.gateway.endpoints.healthz import make_healthz_handler, make_metrics_handler
from runtime.gateway.endpoints.info import make_info_handler
from runtime.gateway.endpoints.invoke import make_invoke_handler
from runtime.gateway.endpoints.list_functions import make_list_functions_handler
from runtime.gateway.endpoints.logs import make_logs_handler
from runtime.gateway.endpoints.namespaces import make_namespaces_handler
from runtime.gateway.endpoints.queue import make_queue_handler, make_queue_retry_handler
from runtime.gateway.endpoints.scale_function import make_scale_function_handler
from runtime.gateway.endpoints.secrets import make_secrets_handler
from runtime.gateway.endpoints.update_function import make_update_function_handler
from runtime.gateway.invoker import Invoker
from runtime.gateway.metrics import GatewayMetrics
from runtime.gateway.routes import Endpoints, build_router
from runtime.httpcore.server import HttpServer
from runtime.httpcore.upstream import UpstreamPool
from runtime.logs import LogStore
from runtime.providers.container import ContainerLauncher, make_docker_provider
from runtime.providers.engine_api import EngineClient, EngineError
from runtime.providers.hybrid import HybridLauncher
from runtime.providers.process import ProcessLauncher
from runtime.providers.replicas import Launcher, ReplicaProvider, ReplicaProviderConfig
from runtime.queue.store import CallStore
from runtime.queue.worker import QueueWorkers
from runtime.secrets import SecretStore
from runtime.service import StartupError
from runtime.venvs import VenvCache

log = logging.getLogger(__name__)


def state_paths(state_dir: Path) -> dict[str, Path]:
    """Where each part of the runtime keeps its state (shared with the CLI)."""
    return {
        "gateway_secrets": state_dir / "secrets" / "gateway",
        "function_secrets": state_dir / "secrets" / "functions",
        "queue": state_dir / "queue.sqlite3",
        "logs": state_dir / "logs",
        "artifacts": state_dir / "artifacts",
    }


class Gateway:
    """The gateway, its queue workers and the function provider, wired together."""

    def __init__(self, cfg: RuntimeConfig) -> None:
        self.cfg = cfg
        paths = state_paths(cfg.state_dir)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        user, password = ensure_credentials(paths["gateway_secrets"])
        # Idle connections kept per replica: no more than the calls it may have in flight.
        self.pool = UpstreamPool(max_idle_per_upstream=cfg.replica_concurrency)
        self.metrics = GatewayMetrics()
        self.secrets = SecretStore(paths["function_secrets"])
        self.logs = LogStore(paths["logs"])
        self.store = CallStore(paths["queue"])
        self.provider = self._make_provider(cfg, paths)
        invoker = Invoker(
            self.provider, self.pool, self.metrics, concurrency=cfg.replica_concurrency
        )
        self.workers = QueueWorkers(
            self.store,
            invoker,
            workers=cfg.queue_workers,
            timeout=cfg.async_timeout,
            max_attempts=cfg.async_max_attempts,
            retry_window=cfg.async_retry_window,
        )
        endpoints = Endpoints(
            invoke=make_invoke_handler(invoker, timeout=cfg.upstream_timeout),
            async_invoke=make_async_invoke_handler(
                self.provider, self.store, self.workers.wake, max_body=cfg.max_body_bytes
            ),
            list_functions=make_list_functions_handler(self.provider, self.metrics),
            deploy_function=make_deploy_function_handler(self.provider),
            update_function=make_update_function_handler(self.provider),
            delete_function=make_delete_function_handler(self.provider, self.metrics),
            function_status=make_function_status_handler(self.provider, self.metrics),
            scale_function=make_scale_function_handler(self.provider),
            info=make_info_handler(cfg.provider),
            namespaces=make_namespaces_handler(),
            secrets=make_secrets_handler(self.secrets),
            logs=make_logs_handler(self.provider),
            queue=make_queue_handler(self.store),
            queue_retry=make_queue_retry_handler(self.store, self.workers.wake),
            healthz=make_healthz_handler(),
            metrics=make_metrics_handler(self.provider, self.metrics),
        )
        self.server = HttpServer(build_router(endpoints, BasicAuth(user, password)))
        self.port = 0

    def _make_provider(self, cfg: RuntimeConfig, paths: dict[str, Path]) -> ReplicaProvider:
        """The provider ``OFC_PROVIDER`` names: ``process``, ``docker`` or ``hybrid``."""
        config = ReplicaProviderConfig(
            state_dir=cfg.state_dir,
            ready_timeout=cfg.ready_timeout,
            drain_timeout=cfg.drain_timeout,
        )
        shared = {
            "secrets": self.secrets,
            "logs": self.logs,
            "on_endpoint_closed": lambda e: self.pool.discard(e.host, e.port),
        }
        if cfg.provider == "docker":
            return make_docker_provider(
                config, docker_socket=cfg.docker_socket, pull=cfg.docker_pull, **shared
            )
        artifacts = ArtifactStore(paths["artifacts"])
        processes = ProcessLauncher(
            cfg.state_dir,
            artifacts=artifacts,
            venvs=VenvCache(cfg.venv_dir, python=cfg.python, pip_args=cfg.pip_args),
        )
        launcher: Launcher = processes
        if cfg.provider == "hybrid":
            containers = ContainerLauncher(
                EngineClient(cfg.docker_socket), state_dir=cfg.state_dir, pull=cfg.docker_pull
            )
            launcher = HybridLauncher(processes, containers, artifacts)
        return ReplicaProvider(config, launcher, **shared)

    async def start(self) -> int:
        """Restore functions, start the queue workers and listen; returns the bound port."""
        try:
            await self.provider.start()
        except EngineError as exc:
            raise StartupError(
                f"the Docker engine at {self.cfg.docker_socket} does not answer: {exc} "
                "(OFC_DOCKER_HOST; `ofc engine status`)"
            ) from None
        await self.workers.start()
        self.port = await self.server.listen(self.cfg.host, self.cfg.port)
        log.info("gateway listening on http://%s:%d", self.cfg.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight, stop workers and every replica."""
        await self.server.close()
        await self.workers.close()
        await self.provider.close()
        self.pool.close()
        self.store.close()
