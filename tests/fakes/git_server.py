"""A git smart-HTTP server for tests: github.com's clone endpoints, on 127.0.0.1.

Clients speak the real protocol (v0 or v2, shallow fetches, fetching one commit by id)
because the answering is done by git itself: each request runs ``git http-backend`` as a
CGI program behind a small WSGI app, on a werkzeug server in a thread. The CGI
environment and the parsing of its header block are the platform's own git remote's
(:mod:`gitserver.cgi`), so both servers speak to git the same way. Served repositories
are bare repositories at ``<root>/<owner>/<repo>.git`` with
``uploadpack.allowReachableSHA1InWant`` and ``uploadpack.allowAnySHA1InWant`` on, so
``git fetch --depth 1 <url> <40-hex sha>`` works as it does against GitHub.

What it plays of GitHub:

- ``GET /{owner}/{repo}.git/info/refs?service=git-upload-pack`` and
  ``POST /{owner}/{repo}.git/git-upload-pack`` (``.git`` optional, owner and repo matched
  without regard to case, as GitHub does). Nothing else: pushes (``git-receive-pack``) are
  refused with 403, the dumb protocol with 403, other paths 404, a wrong method 405.
- A repository it does not hold: 404.
- Private repositories need HTTP basic auth with user ``x-access-token`` and a token the
  callback given to :meth:`GitServer.allow_token` accepts; anything else gets 401 with
  ``WWW-Authenticate: Basic realm="GitHub"`` (and git reports "Authentication failed").
  Public repositories need nothing and ignore credentials. Unlike GitHub, which answers an
  anonymous request for a missing repository 401 so as not to reveal which private
  repositories exist, a missing repository is 404 whoever asks.

Every request is recorded in :attr:`GitServer.requests` with the user name and whether the
token was accepted, never the password. Commits are made with :meth:`GitServer.create_repo`
and :meth:`GitServer.commit` in a scratch working clone (fixed author, no global git
configuration read) and pushed into the bare repository.

Use the fixture by importing it into a test module; pytest registers it under its own name,
``git_server`` (or ``git_server_module``, one server per test module), whatever the import
calls it::

    from tests.fakes.git_server import (
        git_server as _git_server,  # noqa: F401  (registers the git_server fixture)
    )

    def test_clone(git_server: GitServer) -> None:
        sha = git_server.create_repo("alice", "functions", {"stack.yml": "version: 1.0\\n"})
        url = git_server.clone_url("alice", "functions")  # http://127.0.0.1:<port>/alice/functions.git
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pytest
from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import get_input_stream

from gitserver.cgi import CgiHead, CgiRequest, backend_env, git_env
from tests.helpers import LoopbackWsgi

__all__ = [
    "GIT_USER",
    "GitRequest",
    "GitServer",
    "git_env",
    "git_server",
    "git_server_module",
]

log = logging.getLogger(__name__)

GIT_USER = "x-access-token"  # the user name GitHub wants with an installation token
REALM = 'Basic realm="GitHub"'

# The identity every commit is made with: CI machines have no user.name or user.email.
AUTHOR = {
    "GIT_AUTHOR_NAME": "OFC Test",
    "GIT_AUTHOR_EMAIL": "ofc-test@example.com",
    "GIT_COMMITTER_NAME": "OFC Test",
    "GIT_COMMITTER_EMAIL": "ofc-test@example.com",
}

# GitHub's rules: owners are letters, digits and hyphens; repositories add "." and "_".
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_REPO = re.compile(r"[A-Za-z0-9._-]+")
_ROUTE = re.compile(r"/(?P<owner>[^/]+)/(?P<repo>[^/]+?)(?:\.git)?/(?P<rest>.+)")
# The two smart-HTTP routes of a clone or fetch, and the one method each accepts.
_METHODS = {"info/refs": "GET", "git-upload-pack": "POST"}
_BACKEND_TIMEOUT = 30.0  # seconds a finished request waits for http-backend to exit


@dataclass
class GitRequest:
    """One request the server received. ``user`` is the basic-auth user name (``None``
    without credentials); ``authorised`` is true when the request carried user
    ``x-access-token`` and a token the :meth:`GitServer.allow_token` check accepted for
    this repository. ``git_protocol`` is the ``Git-Protocol`` header (``version=2``)."""

    method: str
    path: str
    query: str
    user: str | None
    authorised: bool
    git_protocol: str | None
    status: int = 0


@dataclass(frozen=True)
class _Repo:
    owner: str
    name: str
    private: bool
    bare: Path
    work: Path
    default_branch: str


def _text(status: int, message: str, **headers: str) -> Response:
    return Response(message, status=status, headers=headers, content_type="text/plain")


def _deny_all(owner: str, repo: str, token: str) -> bool:
    return False


class GitServer:
    """github.com's git-over-HTTP clone endpoints for repositories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[GitRequest] = []
        self.url = ""
        self.host = ""
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._check: Callable[[str, str, str], bool] = _deny_all  # fail closed
        self._backends: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.RLock()
        self._server: LoopbackWsgi | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = LoopbackWsgi(self._wsgi)
        self.host = f"127.0.0.1:{self._server.port}"
        self.url = f"http://{self.host}"
        return self

    def stop(self) -> None:
        """Stop serving, then kill any ``git http-backend`` a client left running."""
        if self._server is not None:
            self._server.stop()
        with self._lock:
            running = list(self._backends)
        for proc in running:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)

    # -- repositories -----------------------------------------------------------------------
    def create_repo(
        self,
        owner: str,
        repo: str,
        files: dict[str, str],
        *,
        private: bool = False,
        branch: str = "main",
        message: str = "initial",
    ) -> str:
        """Create ``owner/repo`` with one commit of ``files`` (path -> text) on ``branch``,
        its default branch; return the commit's sha."""
        if not _OWNER.fullmatch(owner):
            raise ValueError(f"owner {owner!r}: letters, digits and hyphens only")
        if not _REPO.fullmatch(repo) or repo in (".", ".."):
            raise ValueError(f"repository {repo!r}: letters, digits, '.', '-' and '_' only")
        with self._lock:
            if (owner.lower(), repo.lower()) in self._repos:
                raise ValueError(f"{owner}/{repo} already exists")
            bare = self.root / owner / f"{repo}.git"
            # Owners cannot start with ".", so the scratch clones never share a path with one.
            work = self.root / ".work" / owner / repo
            work.mkdir(parents=True)
            self._git("init", "-q", "--bare", "-b", branch, str(bare), cwd=self.root)
            for key, value in (
                ("uploadpack.allowReachableSHA1InWant", "true"),
                ("uploadpack.allowAnySHA1InWant", "true"),
                ("http.receivepack", "false"),  # second lock: the app refuses pushes first
            ):
                self._git("config", key, value, cwd=bare)
            self._git("init", "-q", "-b", branch, cwd=work)
            self._git("remote", "add", "origin", str(bare), cwd=work)
            sha = self._commit_and_push(work, branch, files, message)
            self._repos[(owner.lower(), repo.lower())] = _Repo(
                owner, repo, private, bare, work, branch
            )
        log.debug("created %s/%s at %s (private %s)", owner, repo, sha[:12], private)
        return sha

    def commit(
        self,
        owner: str,
        repo: str,
        files: dict[str, str | None],
        *,
        message: str = "change",
        branch: str = "main",
    ) -> str:
        """Commit ``files`` onto ``branch`` (path -> new text; ``None`` deletes the file) and
        return the new sha. A branch that does not exist yet starts from the default branch."""
        with self._lock:
            found = self._repos.get((owner.lower(), repo.lower()))
            if found is None:
                raise KeyError(f"no repository {owner}/{repo} on this git server")
            # Nothing else writes to the bare repository (pushes are refused), so the
            # scratch clone's branches are always what the server serves.
            known = self._git("branch", "--list", branch, cwd=found.work)
            if known:
                self._git("checkout", "-q", branch, cwd=found.work)
            else:
                self._git("checkout", "-q", "-b", branch, found.default_branch, cwd=found.work)
            return self._commit_and_push(found.work, branch, files, message)

    def clone_url(self, owner: str, repo: str) -> str:
        """``http://127.0.0.1:<port>/<owner>/<repo>.git``: what GitHub's ``clone_url`` is."""
        return f"{self.url}/{owner}/{repo}.git"

    def allow_token(self, check: Callable[[str, str, str], bool]) -> None:
        """Accept a token for a private repository when ``check(owner, repo, token)`` is true.
        Until this is called no token is accepted."""
        self._check = check

    def _commit_and_push(
        self, work: Path, branch: str, files: dict[str, str] | dict[str, str | None], message: str
    ) -> str:
        for name, text in files.items():
            path = work / _relative(name)
            if text is None:
                if not path.is_file():
                    raise FileNotFoundError(f"cannot delete {name!r}: not in the repository")
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text.encode())
        self._git("add", "-A", cwd=work)
        self._git("commit", "-q", "--allow-empty", "-m", message, cwd=work)
        self._git("push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return self._git("rev-parse", "HEAD", cwd=work)

    def _git(self, *args: str, cwd: Path) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=git_env(self.root, **AUTHOR),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} in {cwd}: {result.stderr.strip()}")
        return result.stdout.strip()

    # -- HTTP -------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        auth = request.authorization
        user = auth.username if auth is not None and auth.type == "basic" else None
        token = auth.password if auth is not None and auth.type == "basic" else None
        record = GitRequest(
            method=request.method,
            path=request.path,
            query=request.query_string.decode("latin-1"),
            user=user,
            authorised=False,
            git_protocol=request.headers.get("Git-Protocol"),
        )
        with self._lock:
            self.requests.append(record)
        response = self._handle(request, record, token)
        record.status = response.status_code
        log.debug(
            "%s %s%s -> %d (user %s, authorised %s)",
            record.method,
            record.path,
            f"?{record.query}" if record.query else "",
            record.status,
            record.user,
            record.authorised,
        )
        return response(environ, start_response)

    def _handle(self, request: Request, record: GitRequest, token: str | None) -> Response:
        route = _ROUTE.fullmatch(request.path)
        if route is None:
            return _text(404, "Not Found\n")
        with self._lock:
            repo = self._repos.get((route["owner"].lower(), route["repo"].lower()))
        if repo is None:
            return _text(404, "Repository not found.\n")
        record.authorised = bool(
            record.user == GIT_USER and token and self._check(repo.owner, repo.name, token)
        )
        if repo.private and not record.authorised:
            return _text(401, "Invalid username or token.\n", **{"WWW-Authenticate": REALM})
        rest, service = route["rest"], request.args.get("service")
        if rest == "git-receive-pack" or (rest == "info/refs" and service == "git-receive-pack"):
            return _text(403, "Write access to repository not granted.\n")
        if rest not in _METHODS:
            return _text(404, "Not Found\n")
        if request.method != _METHODS[rest]:
            return _text(405, "Method Not Allowed\n", Allow=_METHODS[rest])
        if rest == "info/refs" and service != "git-upload-pack":
            return _text(403, "GitHub does not serve git over dumb HTTP.\n")
        return self._backend(request.environ, f"/{repo.owner}/{repo.name}.git/{rest}", record)

    def _backend(self, environ: dict[str, Any], path_info: str, record: GitRequest) -> Response:
        """Run ``git http-backend`` for one request: the request body streams to its stdin,
        its stdout (CGI headers, a blank line, the body) streams back."""
        cgi = CgiRequest(
            method=record.method,
            path_info=path_info,
            query=record.query,
            content_type=environ.get("CONTENT_TYPE", ""),
            content_length=environ.get("CONTENT_LENGTH") or None,  # absent when chunked
            content_encoding=environ.get("HTTP_CONTENT_ENCODING"),
            git_protocol=record.git_protocol,
            remote_addr=environ.get("REMOTE_ADDR", ""),
            remote_user=GIT_USER if record.authorised else None,
            server_protocol=environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        )
        env = backend_env(cgi, project_root=self.root, home=self.root)
        stderr = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            ["git", "http-backend"],
            cwd=self.root,
            env=env,
            stdin=subprocess.PIPE if record.method == "POST" else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        with self._lock:
            self._backends.add(proc)
        feeder = None
        if proc.stdin is not None:
            feeder = threading.Thread(
                target=_feed, args=(get_input_stream(environ), proc.stdin), daemon=True
            )
            feeder.start()
        assert proc.stdout is not None
        status, headers = _cgi_headers(proc.stdout)
        if status is None:
            self._reap(proc, feeder, stderr, path_info)
            return _text(502, "git http-backend gave no answer\n")

        def body() -> Iterator[bytes]:
            assert proc.stdout is not None
            try:
                while chunk := proc.stdout.read1(65536):
                    yield chunk
            finally:  # also when the client goes away mid-answer
                self._reap(proc, feeder, stderr, path_info)

        return Response(body(), status=status, headers=headers, direct_passthrough=True)

    def _reap(
        self,
        proc: subprocess.Popen[bytes],
        feeder: threading.Thread | None,
        stderr: IO[bytes],
        path_info: str,
    ) -> None:
        assert proc.stdout is not None
        proc.stdout.close()
        try:
            proc.wait(_BACKEND_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if feeder is not None:
            feeder.join(5)
        with self._lock:
            self._backends.discard(proc)
        stderr.seek(0)
        detail = stderr.read().decode(errors="replace").strip()
        stderr.close()
        if proc.returncode != 0 or detail:
            log.warning("git http-backend %s exited %s: %s", path_info, proc.returncode, detail)


def _relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or {"..", ".git"} & set(path.parts):
        raise ValueError(f"file {name!r}: a relative path inside the repository, outside .git")
    return path


def _feed(source: IO[bytes], sink: IO[bytes]) -> None:
    """Copy the request body into http-backend's stdin, then close it (end of request)."""
    try:
        while chunk := source.read(65536):
            sink.write(chunk)
    except BrokenPipeError:
        pass  # http-backend stopped reading (a bad request); its answer says why
    finally:
        try:
            sink.close()
        except BrokenPipeError:
            pass  # closing flushes; the same early exit as above


def _cgi_headers(stdout: IO[bytes]) -> tuple[str | None, list[tuple[str, str]]]:
    """The CGI header block: ``Status:`` as werkzeug's status string (``"200 OK"`` when
    absent, as CGI says) and the other headers; ``(None, [])`` if the output ends first."""
    head = CgiHead()
    while True:
        line = stdout.readline()
        if not line:
            return None, []
        if head.feed(line):
            return head.status_line, head.headers


def _require_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH: the git server runs git's own http-backend")


# The explicit names make pytest register them as "git_server" and "git_server_module"
# under any import alias.
@pytest.fixture(name="git_server")
def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A started :class:`GitServer` holding no repositories, for one test."""
    _require_git()
    server = GitServer(tmp_path_factory.mktemp("git-server")).start()
    yield server
    server.stop()


@pytest.fixture(name="git_server_module", scope="module")
def git_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A started :class:`GitServer` shared by a test module (give each test its own repos)."""
    _require_git()
    server = GitServer(tmp_path_factory.mktemp("git-server")).start()
    yield server
    server.stop()
