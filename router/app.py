"""The edge router's composition root and its request handler.

The router is the platform's only ingress: :mod:`router.routes` says where a request
goes, :mod:`router.functions` whether a user's function may be reached,
:mod:`router.sessions` whether a protected path may, and :mod:`router.proxy` forwards.
Every answer is counted (:mod:`router.metrics`) and logged (:mod:`router.access_log`)
once its last byte is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from router import routes
from router.access_log import AccessLog
from router.config import RouterConfig
from router.functions import FunctionCache, GatewayLister
from router.metrics import RouterMetrics
from router.proxy import Forwarder, error_response
from router.routes import NotRouted, Route, RouteTable
from router.sessions import ALLOW, FORBIDDEN, LOGIN, SessionGate
from runtime.httpcore.server import Handler, HttpServer, Request, Response
from runtime.httpcore.upstream import UpstreamPool

__all__ = ["EdgeRouter", "build_handler"]

log = logging.getLogger(__name__)

# (request, its route, monotonic time it arrived) -> answer
RouteHandler = Callable[[Request, Route, float], Awaitable[Response]]
STOP_GRACE_SECONDS = 10.0
LISTING_TIMEOUT = 10.0


class EdgeRouter:
    """The router's server, upstream pool, function cache, session gate and logs."""

    def __init__(self, cfg: RouterConfig) -> None:
        self.cfg = cfg
        # Idle upstream connections expire before the gateway's own 75 s idle timeout.
        self.pool = UpstreamPool(
            max_idle_per_upstream=cfg.max_idle_per_upstream,
            idle_timeout=60.0,
            connect_timeout=cfg.connect_timeout,
        )
        self.metrics = RouterMetrics()
        self.access_log = AccessLog(cfg.access_log)
        proto = cfg.public_scheme.encode()
        self.functions = FunctionCache(
            # A listing slower than this is a gateway in trouble; the start waits for one.
            GatewayLister(
                self.pool,
                cfg.gateway,
                cfg.gateway_secrets_dir,
                timeout=min(cfg.upstream_timeout, LISTING_TIMEOUT),
            ),
            self.metrics,
            interval=cfg.refresh_interval,
            min_interval=cfg.refresh_min_interval,
        )
        self.sessions = SessionGate(
            self.pool, cfg.auth, self.metrics, ttl=cfg.session_ttl,
            timeout=cfg.auth_timeout, proto=proto,
        )  # fmt: skip
        forwarder = Forwarder(self.pool, self.metrics, proto=proto, timeout=cfg.upstream_timeout)
        handler = build_handler(
            cfg, RouteTable(cfg.domain), self.functions, self.sessions, forwarder,
            self.metrics, self.access_log,
        )  # fmt: skip
        self.server = HttpServer(handler, idle_timeout=cfg.idle_timeout)

    async def start(self) -> int:
        """Open the access log, load the function list, listen; returns the bound port."""
        self.access_log.open()
        await self.functions.start()
        port = await self.server.listen(self.cfg.host, self.cfg.port)
        log.info(
            "routing %s: functions at %s, gateway %s, edge-auth %s, git %s",
            self.cfg.domain, self.cfg.public_origin("<user>") + "/<function>",
            self.cfg.gateway.url, self.cfg.auth.url, self.cfg.git.url,
        )  # fmt: skip
        return port

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight, close everything, flush the log."""
        await self.server.close(STOP_GRACE_SECONDS)
        await self.functions.stop()
        self.pool.close()
        self.access_log.close()


def build_handler(
    cfg: RouterConfig,
    table: RouteTable,
    functions: FunctionCache,
    sessions: SessionGate,
    forwarder: Forwarder,
    metrics: RouterMetrics,
    access_log: AccessLog,
) -> Handler:
    """The router's request handler: route, decide access, forward, count and log."""
    forward = forwarder.forward
    gateway, git, auth = cfg.gateway, cfg.git, cfg.auth
    login_origin = cfg.public_origin("auth.system")
    system_origin = cfg.public_origin("system")

    async def user_function(request: Request, route: Route, arrived: float) -> Response:
        if functions.owner(route.name) != route.user:
            # Not in the list: it may have been deployed a moment ago.
            await functions.refreshed_since(arrived)
            if functions.owner(route.name) != route.user:
                return not_found(route)
        return await forward(request, gateway, route.target, label="gateway")

    def not_found(route: Route) -> Response:
        if not functions.loaded or functions.last_error is not None:
            return error_response(
                503,
                "the router cannot check which functions exist right now; try again in a moment",
            )
        if not functions.has_user(route.user):
            return error_response(404, f"no functions are deployed for user {route.user!r}")
        return error_response(404, f"user {route.user!r} has no function {route.function!r}")

    async def github_event(request: Request, route: Route, arrived: float) -> Response:
        return await forward(request, gateway, route.target, label="gateway")

    async def dashboard(request: Request, route: Route, arrived: float) -> Response:
        path = request.target.partition(b"?")[0]
        decision = await sessions.decide(request, path)
        if decision == ALLOW:
            return await forward(request, gateway, route.target, label="gateway", keep_session=True)
        if decision == LOGIN:
            url = f"{login_origin}/login?r=" + quote(
                system_origin + request.target.decode("latin-1"), safe=""
            )
            if request.method in ("GET", "HEAD"):
                return error_response(302, f"sign in first: {url}", [(b"location", url.encode())])
            return error_response(401, f"sign in first: {url}")
        if decision == FORBIDDEN:
            return error_response(403, "your account may not use the dashboard")
        return error_response(
            503, "the sign-in service is not answering, so the dashboard cannot be opened; "
            "try again in a moment",
        )  # fmt: skip

    async def git_remote(request: Request, route: Route, arrived: float) -> Response:
        return await forward(request, git, route.target, label="git")

    async def edge_auth(request: Request, route: Route, arrived: float) -> Response:
        return await forward(request, auth, route.target, label="auth", keep_session=True)

    async def healthz(request: Request, route: Route, arrived: float) -> Response:
        return Response(200, [(b"content-type", b"text/plain; charset=utf-8")], b"OK\n")

    async def metrics_endpoint(request: Request, route: Route, arrived: float) -> Response:
        age = None if functions.loaded_at is None else time.monotonic() - functions.loaded_at
        text = metrics.render(functions.size, age)
        return Response(200, [(b"content-type", b"text/plain; version=0.0.4")], text.encode())

    async def to_dashboard(request: Request, route: Route, arrived: float) -> Response:
        location = f"{system_origin}/dashboard/".encode()
        return error_response(307, "the dashboard is at /dashboard/", [(b"location", location)])

    table_of: dict[str, RouteHandler] = {
        routes.FUNCTION: user_function,
        routes.GITHUB_EVENT: github_event,
        routes.DASHBOARD: dashboard,
        routes.GIT: git_remote,
        routes.AUTH: edge_auth,
        routes.HEALTHZ: healthz,
        routes.METRICS: metrics_endpoint,
        routes.TO_DASHBOARD: to_dashboard,
    }
    own = {routes.HEALTHZ: ("GET", "HEAD"), routes.METRICS: ("GET", "HEAD")}

    async def handle(request: Request) -> Response:
        started = time.monotonic()
        host = request.header(b"host")
        kind = routes.NONE
        try:
            route = table.route(host, request.target)
            kind = route.kind
            if kind in own and request.method not in own[kind]:
                response = error_response(405, "method not allowed", [(b"allow", b"GET, HEAD")])
            else:
                response = await table_of[kind](request, route, started)
        except NotRouted as exc:
            response = error_response(exc.status, exc.message)
        observe(request, response, kind, host, started)
        return response

    def observe(
        request: Request, response: Response, kind: str, host: bytes | None, started: float
    ) -> None:
        release = response.on_sent

        def sent(ok: bool) -> None:
            if release is not None:
                release(ok)
            status = response.status
            metrics.request(kind, status)
            access_log.record(
                request.client, host, request.method, request.target, status,
                response.sent, time.monotonic() - started,
            )  # fmt: skip

        response.on_sent = sent

    return handle
