"""The git server itself: real git clients must clone and fetch from it as from github.com,
and it must refuse what GitHub refuses, or every git-tar test built on it proves less."""

from __future__ import annotations

import gzip
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
import requests

from tests.fakes.git_server import GIT_USER, GitServer, git_env
from tests.fakes.git_server import (
    git_server as _git_server,  # noqa: F401  (registers the git_server fixture)
)
from tests.fakes.git_server import (
    git_server_module as _git_server_module,  # noqa: F401  (registers git_server_module)
)
from tests.helpers import child_pids, wait_until

FILES = {
    "stack.yml": "version: 1.0\nfunctions:\n  hello:\n    lang: python3-http\n",
    "hello/handler.py": "def handle(event, context):\n    return {'body': 'hi'}\n",
}
GOOD = "ghs_goodToken0123456789abcdef"
BAD = "ghs_badToken9876543210fedcba"
UPLOAD_REQUEST = "application/x-git-upload-pack-request"


def run_git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=git_env(cwd), capture_output=True, text=True, timeout=30
    )


def with_token(url: str, token: str, user: str = GIT_USER) -> str:
    """The clone URL as git-tar builds it: ``http://x-access-token:<token>@host/...``."""
    return url.replace("http://", f"http://{user}:{token}@", 1)


def fetch_commit(url: str, sha: str, dest: Path, protocol: str = "2") -> git.Repo:
    """What git-tar does: an empty repository, a depth-1 fetch of one sha, a checkout."""
    repo = git.Repo.init(dest)
    env = git_env(
        dest, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="protocol.version", GIT_CONFIG_VALUE_0=protocol
    )
    repo.git.fetch(url, sha, depth=1, env=env)
    repo.git.checkout(sha, force=True, env=env)
    return repo


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


# A protocol v2 ls-refs request: command, delimiter, arguments, flush.
LS_REFS = pkt("command=ls-refs\n") + b"0001" + pkt("ref-prefix refs/heads/\n") + b"0000"


@pytest.fixture(scope="module")
def public(git_server_module: GitServer) -> Iterator[tuple[GitServer, str]]:
    """alice/functions, public, with one commit of FILES; shared by the read-only tests."""
    sha = git_server_module.create_repo("alice", "functions", FILES)
    yield git_server_module, sha


@pytest.fixture
def private(git_server: GitServer) -> GitServer:
    """alice/secret, private, readable with GOOD and nothing else."""
    git_server.create_repo("alice", "secret", FILES, private=True)
    git_server.allow_token(
        lambda owner, repo, token: (owner, repo, token) == ("alice", "secret", GOOD)
    )
    return git_server


# -- public repositories ---------------------------------------------------------------------
def test_clone_of_a_public_repo_with_plain_git_gives_its_files(
    public: tuple[GitServer, str], tmp_path: Path
) -> None:
    server, sha = public
    result = run_git("clone", server.clone_url("alice", "functions"), "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out") == FILES
    assert run_git("rev-parse", "HEAD", cwd=tmp_path / "out").stdout.strip() == sha


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"Git-Protocol": "version=2"}, b"version 2"), ({}, b" refs/heads/main")],
    ids=["v2-when-the-client-asks", "v0-otherwise"],
)
def test_ref_advertisement_speaks_the_protocol_version_the_client_asks_for(
    public: tuple[GitServer, str], headers: dict[str, str], expected: bytes
) -> None:
    server, _ = public
    response = requests.get(
        f"{server.clone_url('alice', 'functions')}/info/refs",
        params={"service": "git-upload-pack"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    assert expected in response.content


@pytest.mark.parametrize("protocol", ["2", "0"], ids=["protocol-v2", "protocol-v0"])
def test_shallow_fetch_of_an_older_commit_id_checks_out_that_commit(
    git_server: GitServer, tmp_path: Path, protocol: str
) -> None:
    # An older commit is not a branch tip: protocol v0 serves it only because the repo
    # allows reachable (and any) commit ids in "want" lines.
    first = git_server.create_repo("alice", "functions", FILES)
    git_server.commit("alice", "functions", {"stack.yml": "version: 1.0\nfunctions: {}\n"})
    repo = fetch_commit(git_server.clone_url("alice", "functions"), first, tmp_path, protocol)
    assert repo.head.commit.hexsha == first
    assert tree(tmp_path) == FILES
    assert repo.git.rev_list("--count", "HEAD") == "1"  # depth 1: no history came along
    expected = "version=2" if protocol == "2" else None
    assert {r.git_protocol for r in git_server.requests} == {expected}


def test_request_body_gzipped_by_the_client_is_inflated_by_http_backend(
    public: tuple[GitServer, str],
) -> None:
    # git gzips upload-pack requests over 1 KiB (a fetch with many "have" lines).
    server, sha = public
    response = requests.post(
        f"{server.clone_url('alice', 'functions')}/git-upload-pack",
        data=gzip.compress(LS_REFS),
        headers={
            "Content-Type": UPLOAD_REQUEST,
            "Content-Encoding": "gzip",
            "Git-Protocol": "version=2",
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert f"{sha} refs/heads/main".encode() in response.content


def test_chunked_request_body_without_a_length_reaches_http_backend(
    public: tuple[GitServer, str],
) -> None:
    # git sends requests over http.postBuffer (1 MiB) chunked, with no Content-Length.
    server, sha = public
    response = requests.post(
        f"{server.clone_url('alice', 'functions')}/git-upload-pack",
        data=iter([LS_REFS[:10], LS_REFS[10:]]),  # an iterator: requests sends it chunked
        headers={"Content-Type": UPLOAD_REQUEST, "Git-Protocol": "version=2"},
        timeout=10,
    )
    assert response.status_code == 200
    assert f"{sha} refs/heads/main".encode() in response.content


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/alice/functions/info/refs?service=git-upload-pack", 200),
        ("GET", "/ALICE/Functions.git/info/refs?service=git-upload-pack", 200),
        ("GET", "/alice/nothing.git/info/refs?service=git-upload-pack", 404),
        ("GET", "/bob/functions.git/info/refs?service=git-upload-pack", 404),
        ("GET", "/alice/functions.git/info/refs?service=git-receive-pack", 403),
        ("POST", "/alice/functions.git/git-receive-pack", 403),
        ("GET", "/alice/functions.git/info/refs", 403),
        ("GET", "/alice/functions.git/HEAD", 404),
        ("POST", "/alice/functions.git/info/refs?service=git-upload-pack", 405),
        ("GET", "/alice/functions.git/git-upload-pack", 405),
        ("GET", "/alice", 404),
    ],
    ids=[
        "without-dot-git",
        "other-letter-case",
        "unknown-repo",
        "unknown-owner",
        "push-advertisement",
        "push",
        "dumb-http-refs",
        "dumb-http-file",
        "refs-by-post",
        "upload-pack-by-get",
        "not-a-repo-path",
    ],
)
def test_routes_answer_as_github_does(
    public: tuple[GitServer, str], method: str, path: str, status: int
) -> None:
    server, _ = public
    response = requests.request(method, server.url + path, timeout=10)
    assert response.status_code == status, response.text
    assert server.requests[-1].status == status


def test_every_http_backend_has_exited_once_its_answer_is_sent(
    public: tuple[GitServer, str], tmp_path: Path
) -> None:
    server, _ = public
    result = run_git("clone", server.clone_url("alice", "functions"), "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # The server reaps a backend after the last byte went out, which the client may see first.
    # Only git's own children count: other session fixtures (a browser) may have theirs.
    def backends() -> list[int]:
        return sorted(p for p in child_pids(os.getpid()) if b"git" in _cmdline(p))

    wait_until(lambda: not backends(), 5, lambda: f"git backends still running: {backends()}")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_clone_of_an_unknown_repo_fails_with_404(git_server: GitServer, tmp_path: Path) -> None:
    result = run_git("clone", git_server.clone_url("alice", "nothing"), "out", cwd=tmp_path)
    assert result.returncode != 0
    assert "not found" in result.stderr
    assert [r.status for r in git_server.requests] == [404]


def test_push_is_refused_with_403_and_the_branch_stays(
    git_server: GitServer, tmp_path: Path
) -> None:
    sha = git_server.create_repo("alice", "functions", FILES)
    url = git_server.clone_url("alice", "functions")
    assert run_git("clone", url, "out", cwd=tmp_path).returncode == 0
    out = tmp_path / "out"
    (out / "extra.txt").write_text("extra\n")
    run_git("add", "extra.txt", cwd=out)
    run_git("-c", "user.name=x", "-c", "user.email=x@example.com", "commit", "-qm", "x", cwd=out)
    result = run_git("push", "origin", "HEAD:main", cwd=out)
    assert result.returncode != 0
    assert "403" in result.stderr
    refused = git_server.requests[-1]
    assert (refused.path, refused.query, refused.status) == (
        "/alice/functions.git/info/refs",
        "service=git-receive-pack",
        403,
    )
    assert run_git("ls-remote", url, "refs/heads/main", cwd=tmp_path).stdout.split()[0] == sha


# -- private repositories --------------------------------------------------------------------
def test_private_repo_clone_without_credentials_fails_with_401(
    private: GitServer, tmp_path: Path
) -> None:
    result = run_git("clone", private.clone_url("alice", "secret"), "out", cwd=tmp_path)
    assert result.returncode != 0
    assert [(r.status, r.user, r.authorised) for r in private.requests] == [(401, None, False)]


def test_private_repo_401_asks_for_basic_credentials_in_githubs_realm(private: GitServer) -> None:
    response = requests.get(
        f"{private.clone_url('alice', 'secret')}/info/refs?service=git-upload-pack", timeout=10
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="GitHub"'


def test_private_repo_clone_with_an_accepted_token_succeeds(
    private: GitServer, tmp_path: Path
) -> None:
    url = with_token(private.clone_url("alice", "secret"), GOOD)
    result = run_git("clone", url, "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path / "out") == FILES
    # git (curl) first asks without credentials, then answers the 401 challenge with them.
    first, *rest = private.requests
    assert (first.status, first.user) == (401, None)
    assert rest and all((r.status, r.user, r.authorised) == (200, GIT_USER, True) for r in rest)


@pytest.mark.parametrize(
    ("user", "token", "repo"),
    [(GIT_USER, BAD, "secret"), ("alice", GOOD, "secret"), (GIT_USER, GOOD, "other")],
    ids=["refused-token", "user-other-than-x-access-token", "token-for-another-repo"],
)
def test_private_repo_clone_with_refused_credentials_fails_with_401(
    private: GitServer, tmp_path: Path, user: str, token: str, repo: str
) -> None:
    private.create_repo("alice", "other", FILES, private=True)
    url = with_token(private.clone_url("alice", repo), token, user)
    result = run_git("clone", url, "out", cwd=tmp_path)
    assert result.returncode != 0
    assert "Authentication failed" in result.stderr
    assert [(r.status, r.user) for r in private.requests] == [(401, None), (401, user)]
    assert not any(r.authorised for r in private.requests)


def test_private_repo_shallow_fetch_of_a_commit_id_with_gitpython(
    private: GitServer, tmp_path: Path
) -> None:
    sha = private.commit("alice", "secret", {"hello/handler.py": None})
    repo = fetch_commit(with_token(private.clone_url("alice", "secret"), GOOD), sha, tmp_path)
    assert repo.head.commit.hexsha == sha
    assert tree(tmp_path) == {"stack.yml": FILES["stack.yml"]}


def test_token_never_appears_in_recorded_requests(private: GitServer, tmp_path: Path) -> None:
    url = private.clone_url("alice", "secret")
    assert run_git("clone", with_token(url, GOOD), "good", cwd=tmp_path).returncode == 0
    assert run_git("clone", with_token(url, BAD), "bad", cwd=tmp_path).returncode != 0
    recorded = repr(private.requests)
    assert GIT_USER in recorded
    assert GOOD not in recorded and BAD not in recorded


# -- making commits --------------------------------------------------------------------------
def test_commit_moves_main_and_the_new_sha_is_fetchable(
    git_server: GitServer, tmp_path: Path
) -> None:
    first = git_server.create_repo("alice", "functions", FILES)
    second = git_server.commit(
        "alice",
        "functions",
        {"stack.yml": "version: 1.0\n", "hello/handler.py": None, "README.md": "# hi\n"},
        message="second",
    )
    url = git_server.clone_url("alice", "functions")
    assert second != first
    assert run_git("ls-remote", url, "refs/heads/main", cwd=tmp_path).stdout.split()[0] == second
    repo = fetch_commit(url, second, tmp_path / "clone")
    assert tree(tmp_path / "clone") == {"README.md": "# hi\n", "stack.yml": "version: 1.0\n"}
    assert repo.head.commit.message.strip() == "second"
    assert repo.head.commit.author.name == "OFC Test"


def test_commit_to_a_new_branch_starts_from_the_default_branch(
    git_server: GitServer, tmp_path: Path
) -> None:
    main = git_server.create_repo("alice", "functions", FILES)
    feature = git_server.commit("alice", "functions", {"new.txt": "new\n"}, branch="feature")
    refs = run_git("ls-remote", git_server.clone_url("alice", "functions"), cwd=tmp_path).stdout
    assert f"{main}\trefs/heads/main" in refs and f"{feature}\trefs/heads/feature" in refs
    fetch_commit(git_server.clone_url("alice", "functions"), feature, tmp_path / "clone")
    assert tree(tmp_path / "clone") == {**FILES, "new.txt": "new\n"}


@pytest.mark.parametrize(
    ("owner", "repo", "files", "error"),
    [
        ("../x", "functions", {}, ValueError),
        (".work", "functions", {}, ValueError),
        ("alice", "a/b", {}, ValueError),
        ("alice", "..", {}, ValueError),
        ("alice", "functions", {"../escape": "x"}, ValueError),
        ("alice", "functions", {".git/config": "x"}, ValueError),
        ("alice", "functions", {"/etc/passwd": "x"}, ValueError),
    ],
    ids=[
        "owner-parent",
        "owner-dot-prefix",
        "repo-slash",
        "repo-parent",
        "file-outside",
        "file-in-git-dir",
        "file-absolute",
    ],
)
def test_create_repo_refuses_names_and_paths_github_would_not_hold(
    git_server: GitServer, owner: str, repo: str, files: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        git_server.create_repo(owner, repo, files)


@pytest.mark.parametrize(
    ("owner", "repo", "files", "error"),
    [
        ("alice", "functions", {"missing.txt": None}, FileNotFoundError),
        ("alice", "nothing", {"a.txt": "a"}, KeyError),
    ],
    ids=["delete-missing-file", "unknown-repo"],
)
def test_commit_refuses_what_it_cannot_do(
    git_server: GitServer,
    owner: str,
    repo: str,
    files: dict[str, str | None],
    error: type[Exception],
) -> None:
    git_server.create_repo("alice", "functions", FILES)
    with pytest.raises(error):
        git_server.commit(owner, repo, files)


def test_create_repo_refuses_a_name_taken_in_another_letter_case(git_server: GitServer) -> None:
    git_server.create_repo("alice", "functions", FILES)
    with pytest.raises(ValueError, match="already exists"):
        git_server.create_repo("Alice", "Functions", FILES)
