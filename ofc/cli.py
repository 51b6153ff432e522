"""``ofc``: run the embedded platform and manage functions on it.

    ofc up [--detach] [-f stack.yml]     start the runtime, the builder and the git remote, deploy the stack
    ofc down                             stop them all (functions stop with the runtime)
    ofc deploy -f stack.yml [--filter N] build, store and deploy functions, wait for them
    ofc list                             functions with replicas and invocations
    ofc invoke NAME [--async]            call a function with stdin as the body
    ofc logs NAME [--tail N] [--follow]  a function's log
    ofc remove NAME                      delete a function
    ofc secret create NAME --from-file F | --from-literal V;  ofc secret list | remove NAME
    ofc queue [--status failed];  ofc queue retry [CALL_ID]
    ofc user add NAME | list | remove NAME   users of the git remote (add prints the token, once)
    ofc engine up | down | status [--dir D]  a private dockerd and registry on loopback
    ofc base-image [--force]             build (or reuse) the functions' base image in the engine
    ofc secrets generate [--dir D] [--format kubectl|faas-cli]   production secrets, as 0600 files
    ofc render [-f values.yaml] [--set k=v] [-o DIR]   Kubernetes manifests (deploy/kubernetes)

Exit status: 0 on success, 1 when something failed (one line on stderr says what),
2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from gitserver.users import UserError, UserStore, users_file
from runtime.artifacts import ArtifactStore
from sdk.config import ConfigError, env_int
from sdk.gateway import GatewayError
from sdk.stack import StackError, filter_functions, load_stack

from . import base_image as base_image_mod
from . import engine as engine_mod
from . import manifests, secrets_gen
from .deploy import build_function, check_stack, deploy, function_url, wait_for_rollout
from .local import (
    AUTH,
    BUILDER,
    GATEWAY,
    GITSERVER,
    REPO,
    ROUTER,
    SERVICES,
    CliError,
    Local,
    Service,
    service_env,
    spawn,
    stop,
    wait_answering,
)
from .platform import ensure_platform_secrets, platform_env, public_urls


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _local(args: argparse.Namespace) -> Local:
    return Local.from_env(os.environ, state_dir=args.state_dir, gateway=args.gateway)


def _default_stack() -> Path:
    for name in ("stack.yaml", "stack.yml"):
        if Path(name).is_file():
            return Path(name)
    return REPO / "stack.yml"


# -- commands ---------------------------------------------------------------------------------------
def cmd_deploy(args: argparse.Namespace, local: Local | None = None) -> int:
    local = local or _local(args)
    # The root stack.yml takes these from the environment (faas-cli style); an
    # operator's own values win (platform_env merges them, and adds the built-in git
    # remote to GIT_HOSTS).
    os.environ.update(platform_env(local, os.environ))
    path = Path(args.file) if args.file else _default_stack()
    try:
        stack = load_stack(path, os.environ)
        if args.filter:
            stack = filter_functions(stack, args.filter)
    except (StackError, OSError) as exc:
        raise CliError(str(exc)) from None
    stack_dir = path.resolve().parent
    check_stack(stack, stack_dir)
    store = ArtifactStore(local.state_dir / "artifacts")
    client = local.client()
    built = [
        build_function(stack, fn, stack_dir=stack_dir, store=store, progress=_say)
        for fn in stack.functions.values()
    ]
    # Deploy everything first, then wait: rollouts (and virtualenv builds) overlap.
    started = [(b, deploy(client, b)) for b in built]
    for b, since in started:
        if not args.no_wait:
            wait_for_rollout(client, b, since, timeout=args.timeout, progress=_say)
        print(f"{b.name}: {function_url(local.gateway_url, b.name)}", flush=True)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    local = _local(args)
    for service in SERVICES:
        pid = local.pid(service)
        if pid is not None:
            raise CliError(
                f"the {service.title} is already running (pid {pid}); stop it with `ofc down`"
            )
    env = service_env(local, os.environ)
    if args.containers:
        containers = _container_env(local)
        env.update(containers)
        os.environ.update(containers)  # the stack's deploy below reads the registry from it
    procs: dict[Service, subprocess.Popen] = {}  # type: ignore[type-arg]
    try:
        for service in (GATEWAY, BUILDER):
            procs[service] = spawn(local, service, env, detach=args.detach)
            wait_answering(local, service, procs[service])
        local = _local(args)  # credentials exist now
        _say(
            f"gateway: {local.gateway_url}  (user {local.user}; password in "
            f"{local.state_dir / 'secrets' / 'gateway' / 'basic-auth-password'})"
        )
        _say(f"builder: {local.builder_url}/build")
        created = ensure_platform_secrets(local.client())
        if created:
            _say(f"created platform secrets: {', '.join(created)} (values are never printed)")
        # After the secrets: the git server signs push events with the webhook secret and
        # edge-auth signs sessions with the token key; the router reads the gateway's list.
        edge = (GITSERVER, AUTH, ROUTER)
        for service in edge:
            procs[service] = spawn(local, service, env, detach=args.detach)
        for service in edge:
            wait_answering(local, service, procs[service])
        public = public_urls(local, env)
        _say(f"git remote: {public.git}/<user>/<repo>.git  (add users: `ofc user add NAME`)")
        _say(f"functions: {public.function('<user>', '<function>')}  (also {public.path_style})")
        _say(f"dashboard: {public.dashboard}")
        if not args.no_deploy:
            args.filter, args.no_wait = None, False
            cmd_deploy(args, local)
    except BaseException:
        for service, proc in reversed(procs.items()):
            if service is not GATEWAY or not args.detach or proc.poll() is None:
                stop(local, service)
        raise
    if args.detach:
        for service, proc in procs.items():
            _say(f"{service.title} running in the background (pid {proc.pid}, log {local.log_file(service)})")
        _say("stop them with `ofc down`")
        return 0
    gateway = procs[GATEWAY]
    _say("the platform is running in the foreground; Ctrl-C stops it")
    signal.signal(signal.SIGTERM, lambda *_: gateway.send_signal(signal.SIGTERM))
    try:
        return gateway.wait()
    except KeyboardInterrupt:
        gateway.send_signal(signal.SIGTERM)
        return gateway.wait()
    finally:
        for service in reversed(SERVICES[1:]):
            stop(local, service)
        local.pid_file(GATEWAY).unlink(missing_ok=True)


def cmd_down(args: argparse.Namespace) -> int:
    local = _local(args)
    for service in reversed(SERVICES):
        if stop(local, service):
            _say(f"{service.title} stopped")
        elif service is GATEWAY:
            _say("the runtime was not running")
    marker = _engine_marker(local)
    if marker.exists():  # `ofc up --containers` started it: stop it too
        try:
            report = engine_mod.stop_engine(local.state_dir / "engine")
        except engine_mod.EngineError as exc:
            raise CliError(f"cannot stop the Docker engine: {exc}") from None
        for line in report.lines():
            _say(line)
        if report.leftover:
            raise CliError("the Docker engine did not stop completely (see above)")
        marker.unlink()
        _say("Docker engine stopped")
    return 0


def _engine_marker(local: Local) -> Path:
    return local.state_dir / "engine" / "started-by-ofc-up"


def _container_env(local: Local) -> dict[str, str]:
    """``ofc up --containers``: an engine, the base image, and the settings that use them.

    Users' functions are built by the builder's buildkit backend, pushed to the engine's
    registry and run as containers; the platform's own functions stay processes
    (``OFC_PROVIDER=hybrid``). An engine named by ``OFC_DOCKER_HOST`` and
    ``OFC_REGISTRY``, or already running in the state directory, is used as it is; one
    started here is stopped by ``ofc down``.
    """
    given, registry = os.environ.get("OFC_DOCKER_HOST", ""), os.environ.get("OFC_REGISTRY", "")
    if given and registry:
        _say(f"Docker engine: {given}, registry http://{registry} (OFC_DOCKER_HOST, OFC_REGISTRY)")
        return _with_base_image(given, registry)
    directory = local.state_dir / "engine"
    try:
        status = engine_mod.engine_status(directory)
    except engine_mod.EngineError as exc:
        raise CliError(str(exc)) from None
    if status is not None and status.healthy:
        info = status.info
        _say(f"Docker engine: using the one running in {directory}")
    else:
        reason = engine_mod.can_run_engine()
        if reason is not None:
            raise CliError(f"--containers needs a Docker engine, and this machine cannot run one: {reason}")
        info = _start_engine(directory, None)
        _engine_marker(local).write_text(f"{info.pids}\n")
        _say(f"Docker engine started in {directory} ({_pids(info)}), registry http://{info.registry}")
    return _with_base_image(info.docker_host, info.registry)


def _with_base_image(docker_host: str, registry: str) -> dict[str, str]:
    try:
        result = base_image_mod.ensure_base_image(docker_host, progress=_say)
    except base_image_mod.BaseImageError as exc:
        raise CliError(str(exc)) from None
    _say(result.describe())
    return {
        "OFC_PROVIDER": "hybrid",
        "OFC_DOCKER_HOST": docker_host,
        "OFC_BUILDER_BACKEND": "buildkit",
        "OFC_REGISTRY": registry,
    }


def cmd_list(args: argparse.Namespace) -> int:
    functions = _local(args).client().list_functions()
    rows = [("NAME", "IMAGE", "REPLICAS", "AVAILABLE", "INVOCATIONS")]
    for f in sorted(functions, key=lambda f: f["name"]):
        rows.append(
            (
                f["name"],
                f["image"],
                str(f.get("replicas", 0)),
                str(f.get("availableReplicas", 0)),
                str(int(f.get("invocationCount", 0))),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    client = _local(args).client(timeout=args.timeout)
    body = b"" if sys.stdin.isatty() else sys.stdin.buffer.read()
    headers = dict(h.split("=", 1) for h in args.header)
    if args.is_async:
        call_id = client.invoke_async(
            args.name, body, callback_url=args.callback_url, headers=headers
        )
        print(call_id)
        return 0
    response = client.invoke(
        args.name, body, method=args.method, path=args.path or "", headers=headers
    )
    sys.stdout.buffer.write(response.content)
    sys.stdout.flush()
    if response.status_code >= 400:
        _say(f"{args.name} answered {response.status_code}")
        return 1
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    client = _local(args).client()
    try:
        for record in client.logs(args.name, tail=args.tail, follow=args.follow, since=args.since):
            print(f"{record['timestamp']} {record['instance']} {record['text']}", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _local(args).client().remove(args.name)
    _say(f"removed {args.name}")
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    client = _local(args).client()
    if args.secret_command == "create":
        if args.from_file:
            value = Path(args.from_file).read_bytes()
        elif args.from_literal is not None:
            value = args.from_literal.encode()
        else:
            raise CliError("give the value with --from-file FILE or --from-literal VALUE")
        client.create_secret(args.name, value)
        _say(f"secret {args.name} stored")
    elif args.secret_command == "list":
        for name in client.list_secrets():
            print(name)
    else:
        client.delete_secret(args.name)
        _say(f"secret {args.name} removed")
    return 0


def cmd_queue(args: argparse.Namespace) -> int:
    client = _local(args).client()
    if args.queue_command == "retry":
        count = client.retry_failed(args.call_id)
        _say(f"requeued {count} call(s)")
        return 0
    data = client.queue(args.status)
    print("  ".join(f"{k}={v}" for k, v in data["counts"].items()))
    for call in data["calls"]:
        line = (
            f"{call['callId']}  {call['function']}  {call['status']}  attempts={call['attempts']}"
        )
        if call.get("resultStatus") is not None:
            line += f"  status={call['resultStatus']}"
        if call.get("lastError"):
            line += f"  error={call['lastError']}"
        print(line)
    return 0


def cmd_user(args: argparse.Namespace) -> int:
    """Users of the git remote, in the state directory's users file (no runtime needed)."""
    local = _local(args)
    store = UserStore(users_file(local.state_dir))
    try:
        if args.user_command == "add":
            user, token = store.add(args.name)
            own = os.environ.get("OFC_GIT_PUBLIC_URL", "").rstrip("/")
            # Through the edge-router, as users reach everything, unless told otherwise.
            public = f"{own}/git" if own else public_urls(local, os.environ).git
            _say(
                f"user {user.name} created. Their token is printed below, once: it is not "
                "stored and cannot be shown again.\n"
                f"push with: git push {public}/{user.name}/<repo>.git main  "
                f"(user {user.name}, password: the token)"
            )
            print(token, flush=True)
        elif args.user_command == "list":
            for user in sorted(store.read().values(), key=lambda u: u.key):
                print(user.name)
        else:
            user = store.remove(args.name)
            _say(
                f"user {user.name} removed; their repositories stay in "
                f"{local.state_dir / 'git' / 'repos' / user.key}"
            )
    except UserError as exc:
        raise CliError(str(exc)) from None
    return 0


def _engine_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "dir", None):
        return Path(args.dir).expanduser().resolve()
    if args.state_dir:
        return Path(args.state_dir).expanduser().resolve() / "engine"
    return engine_mod.default_engine_dir(os.environ)


def _start_engine(directory: Path, port: int | None) -> engine_mod.EngineInfo:
    if port is None:
        port = env_int(os.environ, "OFC_REGISTRY_PORT", engine_mod.DEFAULT_REGISTRY_PORT,
                       minimum=1, maximum=65535)  # fmt: skip
    try:
        return engine_mod.start_engine(directory, registry_port=port)
    except engine_mod.EngineError as exc:
        raise CliError(str(exc)) from None


def cmd_engine(args: argparse.Namespace) -> int:
    """A private dockerd and registry on loopback (ofc/engine.py); KEY=value lines on stdout."""
    directory = _engine_dir(args)
    try:
        status = engine_mod.engine_status(directory)
    except engine_mod.EngineError as exc:
        raise CliError(str(exc)) from None
    if args.engine_command == "up":
        if status is not None and status.healthy:
            info = status.info
            _say(f"the engine in {directory} is already running ({_pids(info)})")
        else:
            info = _start_engine(directory, args.registry_port)
            _say(
                f"engine running in {directory} ({_pids(info)}), registry http://{info.registry}; "
                f"stop it with `ofc engine down --dir {directory}`"
            )
        print("\n".join(info.env_lines()), flush=True)
        return 0
    if args.engine_command == "down":
        report = engine_mod.stop_engine(directory)
        if not report.found:
            _say(f"no engine was started in {directory}")
            return 0
        for line in report.lines():
            _say(line)
        _say(
            f"engine in {directory} stopped" if not report.leftover else "engine not fully stopped"
        )
        return 1 if report.leftover else 0
    if status is None:
        _say(f"no engine in {directory}")
        return 1
    for name, running in status.running.items():
        pid = status.info.pids[name]
        _say(f"{name} (pid {pid}): {'running' if running else 'not running'}")
    _say(f"API {status.info.docker_host}: {'answering' if status.api else 'not answering'}")
    _say(f"registry http://{status.info.registry}/v2/: "
         f"{'answering' if status.registry else 'not answering'}")  # fmt: skip
    if status.healthy:
        print("\n".join(status.info.env_lines()), flush=True)
    return 0 if status.healthy else 1


def _pids(info: engine_mod.EngineInfo) -> str:
    return ", ".join(f"{name} pid {pid}" for name, pid in info.pids.items())


def cmd_base_image(args: argparse.Namespace) -> int:
    """Build or reuse ofc/python3-base:bookworm in $DOCKER_HOST, else in the ofc engine."""
    host = args.docker_host or os.environ.get("DOCKER_HOST", "")
    if not host:
        directory = _engine_dir(args)
        try:
            status = engine_mod.engine_status(directory)
        except engine_mod.EngineError as exc:
            raise CliError(str(exc)) from None
        if status is not None and status.healthy:
            host = status.info.docker_host
        else:
            _say(f"starting the engine in {directory} (stop it with `ofc engine down`)")
            host = _start_engine(directory, None).docker_host
    try:
        spec = base_image_mod.BaseImageSpec.from_env(
            os.environ, Path(args.extra_ca) if args.extra_ca else None
        )
        if args.mirror:
            spec = dataclasses.replace(spec, mirror=args.mirror)
        result = base_image_mod.ensure_base_image(host, spec, force=args.force, progress=_say)
    except base_image_mod.BaseImageError as exc:
        raise CliError(str(exc)) from None
    _say(result.describe())
    return 0


# -- parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ofc", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--state-dir", help="runtime state directory (default: $OFC_STATE_DIR or ~/.ofc)"
    )
    parser.add_argument(
        "--gateway", help="gateway URL (default: $OPENFAAS_URL or http://127.0.0.1:8080)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-f",
            "--file",
            help="stack file (default: ./stack.yaml, ./stack.yml, else the platform's)",
        )
        p.add_argument(
            "--timeout", type=float, default=600.0, help="seconds to wait for each function"
        )

    up = sub.add_parser("up", help="start the runtime and deploy the stack")
    stack_args(up)
    up.add_argument("-d", "--detach", action="store_true", help="run in the background")
    up.add_argument(
        "--no-deploy", action="store_true", help="only start the runtime and the builder"
    )
    up.add_argument(
        "--containers",
        action="store_true",
        help="build users' functions with BuildKit and run them as containers (starts a "
        "private Docker engine and registry; the platform's own functions stay processes)",
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop the builder and the runtime").set_defaults(func=cmd_down)

    deploy = sub.add_parser("deploy", help="build and deploy functions from a stack file")
    stack_args(deploy)
    deploy.add_argument("--filter", action="append", help="only this function (repeatable)")
    deploy.add_argument("--no-wait", action="store_true", help="do not wait for readiness")
    deploy.set_defaults(func=cmd_deploy)

    sub.add_parser("list", aliases=["ls"], help="list functions").set_defaults(func=cmd_list)

    invoke = sub.add_parser("invoke", help="call a function; the body is read from stdin")
    invoke.add_argument("name")
    invoke.add_argument(
        "--async", dest="is_async", action="store_true", help="queue the call, print its id"
    )
    invoke.add_argument("--callback-url", help="with --async: where to POST the result")
    invoke.add_argument("--method", default="POST")
    invoke.add_argument("--path", help="path after /function/NAME")
    invoke.add_argument(
        "-H", "--header", action="append", default=[], help="KEY=VALUE (repeatable)"
    )
    invoke.add_argument("--timeout", type=float, default=60.0)
    invoke.set_defaults(func=cmd_invoke)

    logs = sub.add_parser("logs", help="show a function's log")
    logs.add_argument("name")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    logs.add_argument("--since", help="only lines from this RFC 3339 time on")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.set_defaults(func=cmd_logs)

    remove = sub.add_parser("remove", aliases=["rm"], help="delete a function")
    remove.add_argument("name")
    remove.set_defaults(func=cmd_remove)

    secret = sub.add_parser("secret", help="manage function secrets")
    secret_sub = secret.add_subparsers(dest="secret_command", required=True)
    create = secret_sub.add_parser("create")
    create.add_argument("name")
    create.add_argument("--from-file")
    create.add_argument("--from-literal")
    secret_sub.add_parser("list")
    secret_remove = secret_sub.add_parser("remove")
    secret_remove.add_argument("name")
    secret.set_defaults(func=cmd_secret)

    queue = sub.add_parser("queue", help="async calls: counts, parked failures, retry")
    queue.add_argument("--status", choices=["queued", "running", "done", "failed"])
    queue_sub = queue.add_subparsers(dest="queue_command")
    retry = queue_sub.add_parser("retry", help="requeue failed calls (all, or one)")
    retry.add_argument("call_id", nargs="?")
    queue.set_defaults(func=cmd_queue)

    user = sub.add_parser("user", help="users of the git remote (git push to the platform)")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    user_add = user_sub.add_parser("add", help="create a user and print their token, once")
    user_add.add_argument("name", help="a GitHub-style login: letters, digits, single hyphens")
    user_sub.add_parser("list", help="the users' names (tokens are never shown)")
    user_remove = user_sub.add_parser("remove", help="delete a user (their repositories stay)")
    user_remove.add_argument("name")
    user.set_defaults(func=cmd_user)
    secrets_gen.add_cli(sub)  # ofc secrets generate (production secrets, ofc/secrets_gen.py)
    manifests.add_cli(sub)  # ofc render (Kubernetes manifests, ofc/manifests.py)

    engine = sub.add_parser("engine", help="a private Docker engine and registry on loopback")
    engine_sub = engine.add_subparsers(dest="engine_command", required=True)
    engine_up = engine_sub.add_parser(
        "up", help="start dockerd and the registry; prints DOCKER_HOST=... and OFC_REGISTRY=..."
    )
    engine_up.add_argument(
        "--registry-port",
        type=int,
        help="registry port on 127.0.0.1 (default: $OFC_REGISTRY_PORT or 5000)",
    )
    engine_sub.add_parser("down", help="stop them by PID and restore the network state")
    engine_sub.add_parser("status", help="whether they run and answer")
    for p in engine_sub.choices.values():
        p.add_argument("--dir", help="engine directory (default: <state dir>/engine)")
    engine.set_defaults(func=cmd_engine)

    base = sub.add_parser("base-image", help="build or reuse the functions' base image")
    base.add_argument(
        "--docker-host", help="engine to use (default: $DOCKER_HOST, else `ofc engine`)"
    )
    base.add_argument("--force", action="store_true", help="rebuild even if the image is there")
    base.add_argument(
        "--mirror", help="Debian mirror (default: $OFC_DEBIAN_MIRROR or deb.debian.org)"
    )
    base.add_argument("--extra-ca", help="a PEM CA certificate to trust inside the image")
    base.add_argument(
        "--dir", help="engine directory when starting one (default: <state dir>/engine)"
    )
    base.set_defaults(func=cmd_base_image)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, GatewayError, ConfigError) as exc:
        _say(f"ofc: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
