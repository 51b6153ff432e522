#!/usr/bin/env python
"""The python3-http wrapper: serves ``function/handler.py`` over HTTP.

Same handler contract as openfaas/python-flask-template's python3-http: the user's
``handle(event, context)`` gets an :class:`Event` built from the Flask request and a
:class:`Context`, and its return value becomes the response (see :func:`to_response`).

Unlike upstream there is no of-watchdog in front of this process, so it is the
server itself: it listens on ``bind_address:port`` (waitress), answers the watchdog's
probes ``GET /_/health`` and ``GET /_/ready`` itself, and turns a handler exception
into a 500 ``internal error`` while the traceback goes to stderr.

Environment, read once in :func:`main` (a malformed value stops the process with
a message naming the variable, exit status 2):

* ``port`` (8080): TCP port; 0 picks a free one, named in the start line.
* ``bind_address`` (0.0.0.0): listen address; the process runtime sets 127.0.0.1.
* ``threads`` (8): waitress worker threads, i.e. handler calls at once.
* ``connection_limit`` (1000): open connections, idle keep-alive ones included.
* ``channel_timeout`` (120): seconds an idle connection stays open.
* ``HOSTNAME`` (localhost): ``context.hostname``.

Start: ``python index.py`` (from any working directory: ``function/`` is found beside
index.py).
One line ``listening on HOST:PORT`` goes to stderr once the socket is bound.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request, Response, request
from waitress import create_server
from werkzeug.datastructures import Headers, MultiDict

log = logging.getLogger("index")

Handle = Callable[["Event", "Context"], Any]
WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

HERE = os.path.dirname(os.path.abspath(__file__))
FUNCTION_DIR = os.path.join(HERE, "function")

# Upstream's routes and methods; Flask adds HEAD (served by the GET view, body
# dropped) and OPTIONS (answered by Flask with an Allow header, handler not called).
METHODS = ["GET", "PUT", "POST", "PATCH", "DELETE"]

# Answered here, ahead of Flask's routing, so no handler can shadow them; the
# same paths and bodies as of-watchdog's probes.
PROBE_PATHS = ("/_/health", "/_/ready")


class ConfigError(ValueError):
    """A malformed environment value; the message names the variable and the value."""


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    # The template cannot import the platform's sdk.config (a function need not
    # ship sdk/), so it carries this one small strict parser of its own.
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    return value


@dataclass(frozen=True)
class ServerConfig:
    """How the wrapper serves; built once from the environment by :meth:`from_env`."""

    port: int = 8080
    bind_address: str = "0.0.0.0"
    threads: int = 8
    # waitress counts every open connection, idle keep-alive ones included, and
    # stops accepting (new connections wait in the listen backlog) at the limit.
    # Its default of 100 is below what a pooling gateway may hold open to one
    # replica, so allow 1000; requests beyond `threads` queue inside waitress.
    # poll() is used instead of select() so descriptors above 1023 work.
    connection_limit: int = 1000
    # Seconds before an idle connection is closed (waitress's default); it does
    # not cut a slow handler short.
    channel_timeout: int = 120
    hostname: str = "localhost"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        """Read ``port``, ``bind_address``, ``threads``, ``connection_limit``,
        ``channel_timeout`` and ``HOSTNAME``; unset or empty means the default.

        Raises :class:`ConfigError`, e.g. ``port='80a': expected a whole number``.
        """
        port = _env_int(env, "port", cls.port, minimum=0)
        if port > 65535:
            raise ConfigError(f"port={port}: must be at most 65535")
        return cls(
            port=port,
            bind_address=env.get("bind_address", "").strip() or cls.bind_address,
            threads=_env_int(env, "threads", cls.threads, minimum=1),
            connection_limit=_env_int(env, "connection_limit", cls.connection_limit, minimum=1),
            channel_timeout=_env_int(env, "channel_timeout", cls.channel_timeout, minimum=1),
            hostname=env.get("HOSTNAME", "") or "localhost",
        )


@dataclass
class Event:
    """One request as the handler sees it (upstream's attribute names and types)."""

    body: bytes  # the raw request body, ``b""`` when there is none
    headers: Headers  # case-insensitive: ``event.headers.get("content-type")``
    method: str  # ``"GET"``, ``"POST"``, ... (``"HEAD"`` for HEAD)
    query: MultiDict  # ``event.query["name"]``, ``event.query.getlist("tag")``
    path: str  # the path after /function/<name>, percent-decoded, e.g. ``"/a b"``

    @classmethod
    def from_request(cls, req: Request) -> Event:
        return cls(
            body=req.get_data(),
            headers=req.headers,
            method=req.method,
            query=req.args,
            path=req.path,
        )


@dataclass(frozen=True)
class Context:
    """What the handler knows about where it runs."""

    hostname: str  # env HOSTNAME, or "localhost"


def to_response(app: Flask, result: Any) -> Any:
    """Turn a handler's return value into something Flask can send.

    * ``None`` -> 200 with an empty body.
    * a ``dict`` -> status ``statusCode`` (default 200), headers ``headers`` (a dict
      or a list of pairs; repeated names such as Set-Cookie are kept), body ``body``:
      a dict or list is sent as JSON (``application/json``); bytes are sent as they
      are (``application/octet-stream`` unless the handler names a Content-Type;
      upstream python3-http would send ``"b'...'"``); ``None`` or missing is empty;
      anything else is ``str()``-ed (``text/html; charset=utf-8`` by default, as
      upstream). A Content-Type in ``headers`` always wins.
    * anything else (a str, a tuple, a Flask Response...) goes to Flask unchanged,
      so a plain string is a 200 ``text/html`` page.
    """
    if result is None:
        return "", 200
    if not isinstance(result, dict):
        return result

    headers = Headers(result.get("headers") or ())
    body = result.get("body")
    default_type = None  # None: the Response default, text/html; charset=utf-8
    if body is None:
        data: str | bytes = b""
    elif isinstance(body, (dict, list)):
        data, default_type = app.json.dumps(body) + "\n", app.json.mimetype
    elif isinstance(body, (bytes, bytearray, memoryview)):
        data, default_type = bytes(body), "application/octet-stream"
    else:
        data = str(body)
    if default_type and "Content-Type" not in headers:
        headers["Content-Type"] = default_type
    return Response(data, status=result.get("statusCode", 200), headers=headers)


def probes(wrapped: WSGIApp) -> WSGIApp:
    """Answer ``/_/health`` and ``/_/ready`` with 200 ``OK`` before Flask routes.

    Like of-watchdog, only GET (and HEAD) are allowed there; other methods get 405.
    The process only listens once the handler module has imported, so 200 means
    the function can take requests.
    """

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in PROBE_PATHS:
            return wrapped(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            headers = [("Allow", "GET, HEAD"), ("Content-Length", "0")]
            start_response("405 Method Not Allowed", headers)
            return [b""]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"" if method == "HEAD" else b"OK"]

    return app


def create_app(handle: Handle, hostname: str) -> Flask:
    """Build the wrapper around ``handle`` (the user's ``handler.handle``)."""
    app = Flask(__name__, root_path=HERE)
    context = Context(hostname=hostname)

    def call_handler(path: str) -> Any:
        return to_response(app, handle(Event.from_request(request), context))

    app.add_url_rule("/", "call_handler", call_handler, defaults={"path": ""}, methods=METHODS)
    app.add_url_rule("/<path:path>", "call_handler", call_handler, methods=METHODS)

    # An exception in the handler, or a return value Flask cannot send, reaches
    # here after Flask has logged it with its traceback ("Exception on /path
    # [POST]"); the caller gets a fixed message, never the traceback.
    @app.errorhandler(500)
    def internal_error(error: Exception) -> tuple[str, int, dict[str, str]]:
        return "internal error", 500, {"Content-Type": "text/plain; charset=utf-8"}

    app.wsgi_app = probes(app.wsgi_app)  # type: ignore[method-assign]
    return app


def load_handle() -> Handle:
    """Import ``function/handler.py`` as upstream does: ``from function import handler``.

    Works with or without ``function/__init__.py``: the Dockerfile creates one, the
    process runtime runs index.py straight from a build folder that has none, and
    there ``function`` imports as a namespace package. Nothing is written into the
    build folder: bytecode goes to ``PYTHONPYCACHEPREFIX`` when that is set (the
    process runtime sets it) and is not written at all otherwise.
    """
    if sys.pycache_prefix is None:
        sys.dont_write_bytecode = True
    # `python index.py` puts this folder first on sys.path already; -P or
    # PYTHONSAFEPATH would not, and then `function` could not be found.
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    # Shared code reaches a function as function/sdk/ (faas-cli's
    # configuration.copy puts the copy inside the handler folder), and a handler
    # imports it as `import sdk`, the import that works from the repository root
    # in development. Putting function/ on the path makes the same line work
    # here. Appended, not prepended, so a file in the function folder cannot
    # shadow the standard library or the wrapper's own packages.
    if FUNCTION_DIR not in sys.path:
        sys.path.append(FUNCTION_DIR)
    from function import handler

    return handler.handle


def main(env: Mapping[str, str] = os.environ) -> None:
    """Entrypoint: configure logging, read the environment, import the handler, serve."""
    # Line-buffered even when stdout/stderr are pipes, so a handler's print()
    # and our log lines reach the runtime's log collector as they happen.
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # waitress warns "Task queue depth is N" on every request while all threads are
    # busy: under load that is one log line per call, which costs the function CPU
    # and floods its log. Saturation shows in latency and metrics instead.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        cfg = ServerConfig.from_env(env)
    except ConfigError as err:
        log.error("invalid configuration: %s", err)
        sys.exit(2)

    app = create_app(load_handle(), cfg.hostname)
    server = create_server(
        app,
        host=cfg.bind_address,
        port=cfg.port,
        threads=cfg.threads,
        connection_limit=cfg.connection_limit,
        channel_timeout=cfg.channel_timeout,
        asyncore_use_poll=True,
        # The function is only reached through the gateway, which sets
        # X-Forwarded-For/-Host itself; waitress would otherwise delete them before the
        # handler sees them, as upstream's python3-http does.
        clear_untrusted_proxy_headers=False,
    )
    # One address gives one server; a name such as "localhost" may resolve to
    # several (127.0.0.1 and ::1), and then waitress lists them all.
    listening = getattr(server, "effective_listen", None)
    for host, port in listening or [(server.effective_host, server.effective_port)]:
        log.info("listening on %s:%s", host, port)

    # SIGTERM ends waitress's loop as Ctrl-C would: it stops serving, gives running
    # handlers up to 5 s to return, and the process exits 0 rather than by signal.
    # The runtime drains a replica's requests before it sends SIGTERM.
    def stop(signum: int, frame: object) -> None:
        log.info("stopping on SIGTERM")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    server.run()


if __name__ == "__main__":
    main()
