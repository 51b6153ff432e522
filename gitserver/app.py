"""The git remote's composition root, its route table and its one error mapper.

Git's smart-HTTP protocol, answered by ``git http-backend`` (:mod:`gitserver.cgi`)::

    GET  /git/<owner>/<repo>[.git]/info/refs?service=git-upload-pack    fetch: advertisement
    POST /git/<owner>/<repo>[.git]/git-upload-pack                      fetch: the pack
    GET  /git/<owner>/<repo>[.git]/info/refs?service=git-receive-pack   push: advertisement
    POST /git/<owner>/<repo>[.git]/git-receive-pack                     push: the pack
    GET  /healthz                                                       200 once listening

Who may do what (HTTP basic auth; without valid credentials 401 with
``WWW-Authenticate: Basic realm="ofc"``, which is what makes git send them):

* push: the owner, as user ``<owner>`` (any case) with their token from ``ofc user add``.
  Anyone else is refused 403. The owner's first push to a repository creates it (at the
  push's advertisement step).
* fetch: the owner with their token, or user ``x-access-token`` with the platform's read
  token for that one repository (:func:`sdk.gitremote.read_token`), which is how the
  pipeline clones. Anyone else is refused 403: every repository is private. A repository
  that does not exist is 404, once the caller may know.

After a push, the refs are compared with those before it (pushes to one repository run
one at a time) and one GitHub-shaped ``push`` event per changed branch or tag goes to
github-event (:mod:`gitserver.events`, :mod:`gitserver.delivery`), after the push has
been answered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from gitserver.cgi import BackendFailed, CgiRequest, backend_env, start_backend
from gitserver.config import ConfigError, GitServerConfig
from gitserver.delivery import EventSender
from gitserver.events import PushContext, push_payload, ref_changes
from gitserver.repos import GitError, Repo, RepoStore, valid_repo_name
from gitserver.users import User, UserError, UserStore, validate_name
from runtime.httpcore.server import Handler, HttpServer, Request, Response
from sdk.gitremote import READ_USER, read_token

__all__ = ["Access", "Endpoints", "GitServer", "Refusal", "build_router", "read_secret_file"]

log = logging.getLogger(__name__)

REALM = b'Basic realm="ofc"'
TEXT = (b"content-type", b"text/plain; charset=utf-8")
STOP_GRACE_SECONDS = 10.0
_ROUTE = re.compile(
    r"/git/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/(?P<rest>info/refs|git-upload-pack|git-receive-pack)"
)


class Refusal(Exception):
    """A request refused with ``status`` and a message git shows the user."""

    def __init__(
        self, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


@dataclass(frozen=True)
class Target:
    """The repository a request names, spelled as in its URL (``.git`` taken off)."""

    owner: str
    repo: str
    rest: str  # info/refs, git-upload-pack or git-receive-pack

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


GitHandler = Callable[[Request, Target], Awaitable[Response]]


# -- who may do what --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as: a user, or the platform reading one repository."""

    name: str
    user: User | None  # None: READ_USER with the read token of the target repository


class Access:
    """Authentication (users' tokens, the platform's read tokens) and the two policies."""

    def __init__(self, users: UserStore, payload_secret: str) -> None:
        self.users = users
        self._payload_secret = payload_secret

    def principal(self, request: Request, target: Target) -> Principal:
        """Who sent ``request``; :class:`Refusal` 401 without valid credentials."""
        credentials = _basic_credentials(request.header(b"authorization"))
        if credentials is None:
            raise Refusal(
                401,
                "authentication required: your user name and the token `ofc user add` printed",
                [(b"www-authenticate", REALM)],
            )
        name, password = credentials
        if name == READ_USER:
            expected = read_token(self._payload_secret, target.owner, target.repo)
            if _same(password, expected):
                return Principal(READ_USER, None)
        else:
            user = self.users.authenticate(name, password)
            if user is not None:
                return Principal(user.name, user)
        raise Refusal(401, "invalid user name or token", [(b"www-authenticate", REALM)])

    def pusher(self, principal: Principal, target: Target) -> User:
        """The user who may push to ``target``; :class:`Refusal` 403 for anyone else."""
        user = principal.user
        if user is None:
            raise Refusal(403, "a read token cannot push")
        if user.key != target.owner.lower():
            raise Refusal(403, f"you can only push to /git/{user.name}/...")
        return user

    def reader(self, principal: Principal, target: Target) -> None:
        """:class:`Refusal` 403 unless ``principal`` may fetch ``target``."""
        user = principal.user
        if user is not None and user.key != target.owner.lower():
            raise Refusal(403, f"repositories are private: you can fetch /git/{user.name}/... only")


def _basic_credentials(header: bytes | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


# -- git http-backend -------------------------------------------------------------------------------
class Backend:
    """Answers a request with ``git http-backend`` over the repositories in ``repos``."""

    def __init__(self, repos: RepoStore) -> None:
        self.repos = repos
        self.running: set[asyncio.Future[int]] = set()

    async def answer(
        self,
        request: Request,
        target: Target,
        principal: Principal,
        *,
        push: bool = False,
        after: Callable[[int], Awaitable[None]] | None = None,
    ) -> tuple[Response, asyncio.Future[int]]:
        """Run http-backend for ``request``; the response streams its answer, the future
        resolves once it has exited and ``after`` has run."""
        cgi = CgiRequest(
            method=request.method,
            path_info=self.repos.path_info(target.owner, target.repo, target.rest),
            query=request.query.decode("latin-1"),
            content_type=_header(request, b"content-type") or "",
            content_length=_header(request, b"content-length"),
            content_encoding=_header(request, b"content-encoding"),
            git_protocol=_header(request, b"git-protocol"),
            remote_addr=request.client,
            remote_user=principal.name,
            server_protocol=f"HTTP/{request.http_version}",
        )
        env = backend_env(cgi, project_root=self.repos.root, home=self.repos.home)
        label = f"{request.method} {target.full_name}/{target.rest}"
        try:
            answer = await start_backend(
                env,
                request.body if request.method == "POST" else None,
                cwd=self.repos.root,
                label=label,
                buffer_all=push,
                after=after,
            )
        except BackendFailed as exc:
            raise Refusal(502, str(exc)) from None
        self.running.add(answer.finished)
        answer.finished.add_done_callback(self.running.discard)
        headers = [(name.encode("latin-1"), value.encode("latin-1"))
                   for name, value in answer.head.headers]  # fmt: skip
        response = Response(answer.head.status, headers, answer.body)
        response.on_sent = lambda ok: answer.abandon()  # also frees git when nobody read it
        return response, answer.finished

    async def stop(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running requests (a push's events get queued),
        then kill what is left."""
        if self.running:
            await asyncio.wait(list(self.running), timeout=grace)
        for task in list(self.running):
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)


def _header(request: Request, name: bytes) -> str | None:
    value = request.header(name)
    return value.decode("latin-1") if value else None


# -- push events ----------------------------------------------------------------------------------
class PushEvents:
    """Turns the refs a push changed into events for github-event."""

    def __init__(self, sender: EventSender) -> None:
        self.sender = sender
        self.public_url = ""  # set once the server knows its port

    async def after_push(self, repo: Repo, pusher: User, before: dict[str, str]) -> None:
        """Compare the refs with ``before``; queue one event per changed branch or tag."""
        after = await repo.refs()
        changes = ref_changes(before, after)
        if not changes:
            return
        default_branch = await _settle_head(repo, after, [c.ref for c in changes if c.created])
        name, created_at = await repo.meta()
        ctx = PushContext(
            owner=pusher,
            pusher=pusher,
            repo_name=name,
            created_at=created_at,
            default_branch=default_branch,
            public_url=self.public_url,
        )
        old_tips = sorted(set(before.values()))
        for change in changes:
            summary = f"{ctx.full_name} {change.ref} {change.before[:12]}..{change.after[:12]}"
            try:
                payload = await push_payload(repo, ctx, change, old_tips)
            except GitError:
                log.exception("push %s: cannot describe it; no event is sent", summary)
                continue
            log.info("push %s by %s: sending its event", summary, pusher.name)
            self.sender.send(self.sender.make("push", payload, summary))


async def _settle_head(repo: Repo, refs: dict[str, str], created: list[str]) -> str:
    """The default branch: HEAD's, unless that branch does not exist and the push created
    others; then, as on GitHub, the first branch pushed becomes the default."""
    head = await repo.head_branch()
    branches = sorted(ref for ref in created if ref.startswith("refs/heads/"))
    if f"refs/heads/{head}" in refs or not branches:
        return head
    head = branches[0].removeprefix("refs/heads/")
    await repo.set_head_branch(head)
    log.info("%s: default branch is now %s", repo.path, head)
    return head


# -- endpoints ------------------------------------------------------------------------------------
def make_info_refs_handler(access: Access, repos: RepoStore, backend: Backend) -> GitHandler:
    """``GET info/refs?service=...``: the refs advertisement that starts a fetch or a push.
    The owner's first push creates the repository here."""

    async def info_refs(request: Request, target: Target) -> Response:
        principal = access.principal(request, target)
        service = dict(parse_qsl(request.query.decode("latin-1"))).get("service")
        if service == "git-receive-pack":
            access.pusher(principal, target)
            if repos.get(target.owner, target.repo) is None:
                await repos.create(target.owner, target.repo)
        elif service == "git-upload-pack":
            access.reader(principal, target)
            _existing(repos, target)
        else:
            raise Refusal(403, "only git's smart HTTP protocol is served (git 1.6.6 or later)")
        response, _ = await backend.answer(request, target, principal)
        return response

    return info_refs


def make_upload_pack_handler(access: Access, repos: RepoStore, backend: Backend) -> GitHandler:
    """``POST git-upload-pack``: send the objects a fetch or a clone asked for."""

    async def upload_pack(request: Request, target: Target) -> Response:
        principal = access.principal(request, target)
        access.reader(principal, target)
        _existing(repos, target)
        response, _ = await backend.answer(request, target, principal)
        return response

    return upload_pack


def make_receive_pack_handler(
    access: Access, repos: RepoStore, backend: Backend, events: PushEvents
) -> GitHandler:
    """``POST git-receive-pack``: take a push, then send its events (not waited for)."""

    async def receive_pack(request: Request, target: Target) -> Response:
        principal = access.principal(request, target)
        pusher = access.pusher(principal, target)
        repo = _existing(repos, target)
        lock = repos.lock(repo)
        await lock.acquire()  # one push per repository: its before/after refs are its own
        try:
            before = await repo.refs()

            async def after(returncode: int) -> None:
                await events.after_push(repo, pusher, before)

            response, finished = await backend.answer(
                request, target, principal, push=True, after=after
            )
        except BaseException:
            lock.release()
            raise
        finished.add_done_callback(lambda _: lock.release())
        return response

    return receive_pack


def _existing(repos: RepoStore, target: Target) -> Repo:
    repo = repos.get(target.owner, target.repo)
    if repo is None:
        raise Refusal(404, f"repository {target.full_name} not found")
    return repo


def make_healthz_handler() -> Handler:
    """``GET /healthz``: 200 while the server accepts requests."""

    async def healthz(_: Request) -> Response:
        return Response(200, [TEXT], b"OK\n")

    return healthz


# -- routes and errors ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    """Every handler the table routes to."""

    info_refs: GitHandler
    upload_pack: GitHandler
    receive_pack: GitHandler
    healthz: Handler


def build_router(e: Endpoints) -> Handler:
    """The server's request handler: the route table and the one error mapper."""
    git_routes: dict[str, tuple[str, GitHandler]] = {
        "info/refs": ("GET", e.info_refs),
        "git-upload-pack": ("POST", e.upload_pack),
        "git-receive-pack": ("POST", e.receive_pack),
    }
    other_routes: dict[str, tuple[str, Handler]] = {"/healthz": ("GET", e.healthz)}

    async def route(request: Request) -> Response:
        try:
            if request.path in other_routes:
                method, handler = other_routes[request.path]
                _allow(request, method)
                return await handler(request)
            match = _ROUTE.fullmatch(request.path)
            if match is None:
                raise Refusal(404, f"no such endpoint: {request.path}")
            target = Target(match["owner"], match["repo"], match["rest"])
            if not _valid_names(target):
                raise Refusal(404, f"repository {target.full_name} not found")
            method, git_handler = git_routes[target.rest]
            _allow(request, method)
            return await git_handler(request, target)
        except Refusal as exc:
            # git always asks without credentials first: that 401 is routine.
            routine = exc.status == 401 and request.header(b"authorization") is None
            log.log(logging.DEBUG if routine else logging.WARNING,
                    "refused %s %s from %s: %d %s", request.method, request.path,
                    request.client, exc.status, exc.message)  # fmt: skip
            return Response(exc.status, [TEXT, *exc.headers], (exc.message + "\n").encode())
        except Exception:
            log.exception("unhandled error serving %s %s", request.method, request.path)
            return Response(500, [TEXT], b"internal error in the git server (see its log)\n")

    return route


def _allow(request: Request, method: str) -> None:
    if request.method != method:
        raise Refusal(405, "method not allowed", [(b"allow", method.encode())])


def _valid_names(target: Target) -> bool:
    try:
        validate_name(target.owner)
    except UserError:
        return False
    return valid_repo_name(target.repo)


# -- composition root -------------------------------------------------------------------------------
def read_secret_file(path: Path, what: str, variable: str) -> str:
    """The trimmed contents of a secret file; :class:`ConfigError` naming the file (never
    the value) when it is missing or empty."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"the {what} file {path} does not exist: `ofc up` creates it "
            f"(or set {variable} to where it is)"
        ) from None
    if not value:
        raise ConfigError(f"the {what} file {path} is empty ({variable})")
    return value


class GitServer:
    """The git remote: users, repositories, the backend, event delivery and the HTTP server."""

    def __init__(self, cfg: GitServerConfig) -> None:
        self.cfg = cfg
        webhook_secret = read_secret_file(
            cfg.webhook_secret_file, "webhook secret", "OFC_WEBHOOK_SECRET_FILE"
        )
        payload_secret = read_secret_file(
            cfg.payload_secret_file, "payload secret", "OFC_PAYLOAD_SECRET_FILE"
        )
        cfg.repos_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.users = UserStore(cfg.users_file)
        self.repos = RepoStore(cfg.repos_dir, home=cfg.git_dir)
        self.sender = EventSender(
            cfg.gateway_url,
            webhook_secret,
            retry_delay=cfg.event_retry_delay,
            timeout=cfg.event_timeout,
        )
        self.events = PushEvents(self.sender)
        self.backend = Backend(self.repos)
        access = Access(self.users, payload_secret)
        endpoints = Endpoints(
            info_refs=make_info_refs_handler(access, self.repos, self.backend),
            upload_pack=make_upload_pack_handler(access, self.repos, self.backend),
            receive_pack=make_receive_pack_handler(access, self.repos, self.backend, self.events),
            healthz=make_healthz_handler(),
        )
        self.server = HttpServer(build_router(endpoints))
        self.port = 0

    @property
    def public_url(self) -> str:
        return self.cfg.public_url or f"http://{_url_host(self.cfg.host)}:{self.port}"

    async def start(self) -> int:
        """Listen; returns the bound port."""
        self.port = await self.server.listen(self.cfg.host, self.cfg.port)
        self.events.public_url = self.public_url
        log.info("git remote listening on http://%s:%d (public URL %s/git/; events to %s)",
                 self.cfg.host, self.port, self.public_url, self.sender.url)  # fmt: skip
        return self.port

    async def stop(self) -> None:
        """Stop accepting; let requests in flight finish, and their events go out."""
        await self.server.close(grace=STOP_GRACE_SECONDS)
        await self.backend.stop(grace=STOP_GRACE_SECONDS)
        await self.sender.close(grace=STOP_GRACE_SECONDS)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
