"""The git remote over real HTTP: real ``git push`` and ``git clone`` against
``python -m gitserver``, and the push events it sends to a recording gateway."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from gitserver.cgi import git_env
from sdk.gitremote import READ_USER, read_token
from sdk.signing import verify_github
from tests.fakes.github import WEBHOOK_SPEC, validate_webhook
from tests.gitserver.conftest import GitRemote, Work, clone
from tests.helpers import Received, wait_until

ZERO = "0" * 40
STACK = "version: 1.0\nfunctions:\n  hello:\n    lang: python3-http\n    handler: ./hello\n"
FILES = {"stack.yml": STACK, "hello/handler.py": "def handle(event, context):\n    return 'hi'\n"}


def payload(event: Received) -> dict:  # type: ignore[type-arg]
    return json.loads(event.body)  # type: ignore[no-any-return]


def assert_valid_push(body: dict) -> None:  # type: ignore[type-arg]
    """GitHub's own schema for ``push`` accepts it (when the specs are at hand)."""
    if WEBHOOK_SPEC.exists():
        assert validate_webhook("push", None, body) == []


def info_refs(
    remote: GitRemote, path: str, service: str, auth: tuple[str, str] | None
) -> requests.Response:
    return requests.get(
        f"{remote.url}/git/{path}/info/refs", params={"service": service}, auth=auth, timeout=10
    )


# -- push ---------------------------------------------------------------------------------------
def test_first_push_creates_the_repo_and_sends_one_signed_push_event(
    remote: GitRemote, work: Work
) -> None:
    token = remote.add_user("Alice")
    sha = work.commit(FILES, "first")

    pushed = work.push(remote.repo_url("alice", "fns", "alice", token))

    assert pushed.returncode == 0, pushed.stderr
    assert (remote.state_dir / "git" / "repos" / "alice" / "fns.git" / "config").is_file()
    [event] = remote.wait_events("Alice/fns", 1)
    assert event.path == "/function/github-event"
    assert event.headers["X-GitHub-Event"] == "push"
    assert event.headers["Content-Type"] == "application/json"
    assert event.headers["User-Agent"] == "ofc-git-remote"
    uuid.UUID(event.headers["X-GitHub-Delivery"])
    assert verify_github(event.body, event.headers, remote.webhook_secret)
    body = payload(event)
    assert_valid_push(body)
    assert (body["ref"], body["before"], body["after"]) == ("refs/heads/main", ZERO, sha)
    assert (body["created"], body["deleted"], body["forced"]) == (True, False, False)
    assert [c["id"] for c in body["commits"]] == [sha]
    commit = body["commits"][0]
    assert commit["message"] == "first"
    assert sorted(commit["added"]) == ["hello/handler.py", "stack.yml"]
    assert commit["author"] == {"name": "Alice Example", "email": "alice@example.com"}
    assert body["head_commit"]["id"] == sha
    repo = body["repository"]
    assert repo["full_name"] == "Alice/fns"
    assert repo["private"] is True
    assert repo["owner"]["login"] == "Alice"
    assert repo["default_branch"] == "main"
    assert repo["clone_url"] == f"{remote.url}/git/Alice/fns.git"
    assert repo["html_url"].startswith(remote.url)
    assert body["sender"]["login"] == body["pusher"]["name"] == "Alice"
    assert "installation" not in body


def test_second_push_sends_the_previous_after_as_before(remote: GitRemote, work: Work) -> None:
    token = remote.add_user("carol")
    url = remote.repo_url("carol", "fns", "carol", token)
    first = work.commit(FILES)
    assert work.push(url).returncode == 0
    second = work.commit({"stack.yml": STACK + "# v2\n"}, "second")
    third = work.commit({"hello/handler.py": None}, "third")

    assert work.push(url).returncode == 0

    _, event = remote.wait_events("carol/fns", 2)
    body = payload(event)
    assert_valid_push(body)
    assert (body["before"], body["after"], body["created"]) == (first, third, False)
    assert [c["id"] for c in body["commits"]] == [second, third]  # oldest first
    assert body["commits"][0]["modified"] == ["stack.yml"]
    assert body["commits"][1]["removed"] == ["hello/handler.py"]
    assert body["head_commit"]["id"] == third


def test_deleting_a_branch_sends_an_event_with_deleted_true(remote: GitRemote, work: Work) -> None:
    token = remote.add_user("dave")
    url = remote.repo_url("dave", "fns", "dave", token)
    sha = work.commit(FILES)
    assert work.push(url, "main", "main:feature").returncode == 0
    remote.wait_events("dave/fns", 2)

    assert work.push(url, ":feature").returncode == 0

    event = payload(remote.wait_events("dave/fns", 3)[-1])
    assert_valid_push(event)
    assert (event["ref"], event["before"], event["after"]) == ("refs/heads/feature", sha, ZERO)
    assert (event["deleted"], event["commits"], event["head_commit"]) == (True, [], None)


def test_a_force_push_is_marked_forced(remote: GitRemote, work: Work) -> None:
    token = remote.add_user("erin")
    url = remote.repo_url("erin", "fns", "erin", token)
    work.commit(FILES)
    assert work.push(url).returncode == 0
    replaced = work.commit({"a.txt": "a"}, "replaced")
    assert work.push(url).returncode == 0
    work.git("reset", "-q", "--hard", "HEAD~1")
    rewritten = work.commit({"b.txt": "b"}, "rewritten")

    assert work.push(url, "+main").returncode == 0

    event = payload(remote.wait_events("erin/fns", 3)[-1])
    assert (event["before"], event["after"], event["forced"]) == (replaced, rewritten, True)
    assert [c["id"] for c in event["commits"]] == [rewritten]


def test_a_tag_push_sends_an_event_naming_the_tagged_commit(remote: GitRemote, work: Work) -> None:
    token = remote.add_user("frank")
    url = remote.repo_url("frank", "fns", "frank", token)
    sha = work.commit(FILES)
    assert work.push(url).returncode == 0
    work.git("tag", "-a", "v1", "-m", "release 1")

    assert work.push(url, "v1").returncode == 0

    event = payload(remote.wait_events("frank/fns", 2)[-1])
    assert_valid_push(event)
    assert (event["ref"], event["created"], event["commits"]) == ("refs/tags/v1", True, [])
    assert event["head_commit"]["id"] == sha


def test_a_large_push_streams_through_chunked(remote: GitRemote, work: Work) -> None:
    # Over git's 1 MiB http.postBuffer the pack goes chunked, without Content-Length.
    token = remote.add_user("grace")
    sha = work.commit({"blob.bin": os.urandom(4 * 1024 * 1024)})

    pushed = work.push(remote.repo_url("grace", "big", "grace", token))

    assert pushed.returncode == 0, pushed.stderr
    assert payload(remote.wait_events("grace/big", 1)[0])["after"] == sha


def test_a_first_push_of_another_branch_makes_it_the_default(
    remote: GitRemote, work: Work, tmp_path: Path
) -> None:
    token = remote.add_user("heidi")
    url = remote.repo_url("heidi", "fns", "heidi", token)
    work.git("checkout", "-q", "-b", "trunk")
    work.commit(FILES)

    assert work.push(url, "trunk").returncode == 0

    event = payload(remote.wait_events("heidi/fns", 1)[0])
    assert event["repository"]["default_branch"] == "trunk"
    assert clone(url, tmp_path / "copy").returncode == 0
    assert (tmp_path / "copy" / "stack.yml").is_file()  # HEAD names a branch that exists


def test_concurrent_pushes_to_one_repository_each_send_only_their_own_event(
    remote: GitRemote, work: Work
) -> None:
    # Pushes to one repository run one at a time: were two to overlap, the first one's
    # after-snapshot would hold the second one's branch too, and its event would go twice.
    token = remote.add_user("olivia")
    url = remote.repo_url("olivia", "fns", "olivia", token)
    work.commit(FILES)
    assert work.push(url).returncode == 0
    branches = [f"b{i}" for i in range(6)]
    for branch in branches:
        work.git("checkout", "-q", "-b", branch, "main")
        work.commit({f"{branch}.txt": branch}, branch)

    pushes = [
        subprocess.Popen(["git", "push", "-q", url, branch], cwd=work.path,
                         env=git_env(work.home), stderr=subprocess.PIPE, text=True)
        for branch in branches
    ]  # fmt: skip

    errors = [p.communicate(timeout=30)[1] for p in pushes]
    assert [p.returncode for p in pushes] == [0] * len(branches), errors
    events = remote.wait_events("olivia/fns", 1 + len(branches))
    time.sleep(0.3)  # nothing more arrives
    refs = [payload(e)["ref"] for e in remote.events("olivia/fns")]
    assert sorted(refs) == sorted(["refs/heads/main", *(f"refs/heads/{b}" for b in branches)])
    assert all(payload(e)["created"] for e in events)


def test_the_git_suffix_is_optional(remote: GitRemote, work: Work, tmp_path: Path) -> None:
    token = remote.add_user("peggy")
    work.commit(FILES)

    assert (
        work.push(remote.repo_url("peggy", "fns", "peggy", token)[: -len(".git")]).returncode == 0
    )

    assert clone(remote.repo_url("peggy", "fns", "peggy", token), tmp_path / "copy").returncode == 0
    assert payload(remote.wait_events("peggy/fns", 1)[0])["repository"]["name"] == "fns"


def test_push_with_a_wrong_token_is_refused_401(remote: GitRemote, work: Work) -> None:
    remote.add_user("ivan")
    work.commit(FILES)

    pushed = work.push(remote.repo_url("ivan", "fns", "ivan", "not-the-token"))
    answer = info_refs(remote, "ivan/fns.git", "git-receive-pack", ("ivan", "not-the-token"))

    assert pushed.returncode != 0
    assert "Authentication failed" in pushed.stderr
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="ofc"'
    assert not (remote.state_dir / "git" / "repos" / "ivan").exists()


def test_push_to_another_users_repository_is_refused_403(remote: GitRemote, work: Work) -> None:
    remote.add_user("judy")
    bob = remote.add_user("bob")
    work.commit(FILES)

    pushed = work.push(remote.repo_url("judy", "fns", "bob", bob))
    answer = info_refs(remote, "judy/fns.git", "git-receive-pack", ("bob", bob))

    assert pushed.returncode != 0
    assert "403" in pushed.stderr
    assert answer.status_code == 403
    assert answer.text == "you can only push to /git/bob/...\n"
    assert not (remote.state_dir / "git" / "repos" / "judy").exists()


def test_the_read_token_cannot_push(remote: GitRemote, work: Work) -> None:
    token = remote.add_user("kim")
    work.commit(FILES)
    assert work.push(remote.repo_url("kim", "fns", "kim", token)).returncode == 0

    pushed = work.push(remote.read_url("kim", "fns"), "main:other")

    assert pushed.returncode != 0
    assert "403" in pushed.stderr


def test_the_push_answer_does_not_wait_for_the_pipeline(
    make_remote: Callable[..., GitRemote], work: Work
) -> None:
    slow = make_remote(delay=1.0)  # github-event takes 1 s to answer
    token = slow.add_user("alice")
    work.commit(FILES)

    started = time.monotonic()
    pushed = work.push(slow.repo_url("alice", "fns", "alice", token))

    assert pushed.returncode == 0, pushed.stderr
    assert time.monotonic() - started < 0.8
    slow.wait_events("alice/fns", 1)


def test_a_failed_delivery_is_retried_with_the_same_delivery_id(
    make_remote: Callable[..., GitRemote], work: Work
) -> None:
    answers = iter([(503, b"busy"), (500, b"oops")])
    flaky = make_remote(reply=lambda _: next(answers, (202, b"accepted")),
                        OFC_GIT_EVENT_RETRY_DELAY="0.05")  # fmt: skip
    token = flaky.add_user("alice")
    work.commit(FILES)

    assert work.push(flaky.repo_url("alice", "fns", "alice", token)).returncode == 0

    events = flaky.wait_events("alice/fns", 3)
    assert len({e.headers["X-GitHub-Delivery"] for e in events}) == 1
    assert len({e.body for e in events}) == 1
    assert "delivered: 202" in flaky.log()


def test_an_undeliverable_event_is_logged_and_the_push_still_succeeds(
    make_remote: Callable[..., GitRemote], work: Work
) -> None:
    down = make_remote(reply=lambda _: (500, b"down"), OFC_GIT_EVENT_RETRY_DELAY="0.01")
    token = down.add_user("alice")
    work.commit(FILES)

    assert work.push(down.repo_url("alice", "fns", "alice", token)).returncode == 0

    down.wait_events("alice/fns", 4)  # the first attempt and three retries
    wait_until(lambda: "NOT delivered" in down.log(), 5, lambda: down.log()[-2000:])
    assert len(down.events("alice/fns")) == 4


# -- fetch ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pushed(remote: GitRemote, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """mallory/fns with one commit of FILES; the owner's token and the commit."""
    token = remote.add_user("mallory")
    work = Work(tmp_path_factory.mktemp("mallory") / "work")
    sha = work.commit(FILES)
    assert work.push(remote.repo_url("mallory", "fns", "mallory", token)).returncode == 0
    return token, sha


def test_the_owner_can_clone(remote: GitRemote, pushed: tuple[str, str], tmp_path: Path) -> None:
    token, sha = pushed

    cloned = clone(remote.repo_url("Mallory", "FNS", "mallory", token), tmp_path / "copy")

    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "copy" / "stack.yml").read_text() == STACK


def test_the_platform_fetches_one_commit_with_the_read_token(
    remote: GitRemote, pushed: tuple[str, str], tmp_path: Path
) -> None:
    # What git-tar does: an empty repository, a depth-1 fetch of the pushed sha.
    _, sha = pushed
    work = Work(tmp_path / "fetch")

    work.git("fetch", "-q", "--depth", "1", remote.read_url("mallory", "fns"), sha)
    work.git("checkout", "-q", sha)

    assert (work.path / "stack.yml").read_text() == STACK


@pytest.mark.parametrize(
    ("user", "password", "status"),
    [
        (None, None, 401),
        ("mallory", "wrong", 401),
        (READ_USER, "wrong", 401),
        (READ_USER, "other-repo", 401),
        ("bob", "bob's own token", 403),
    ],
    ids=[
        "anonymous",
        "wrong-token",
        "wrong-read-token",
        "read-token-of-another-repo",
        "other-user",
    ],
)
def test_fetch_without_the_right_credentials_is_refused(
    remote: GitRemote,
    pushed: tuple[str, str],
    tmp_path: Path,
    user: str | None,
    password: str | None,
    status: int,
) -> None:
    if password == "other-repo":
        password = read_token(remote.payload_secret, "mallory", "other")
    elif password == "bob's own token":
        password = remote.tokens.get("bob") or remote.add_user("bob")

    answer = info_refs(
        remote, "mallory/fns.git", "git-upload-pack", (user, password) if user else None
    )
    cloned = clone(remote.repo_url("mallory", "fns", user, password or ""), tmp_path / "copy")

    assert answer.status_code == status
    if status == 401:
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="ofc"'
    assert cloned.returncode != 0
    assert not (tmp_path / "copy" / "stack.yml").exists()


def test_an_unknown_repository_is_404_for_its_owner(
    remote: GitRemote, pushed: tuple[str, str]
) -> None:
    token, _ = pushed

    answer = info_refs(remote, "mallory/nothing.git", "git-upload-pack", ("mallory", token))
    pack = requests.post(f"{remote.url}/git/mallory/nothing/git-upload-pack",
                         auth=("mallory", token), data=b"0000", timeout=10)  # fmt: skip

    assert (answer.status_code, pack.status_code) == (404, 404)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/git/mallory/fns.git/info/refs", 403),  # the dumb protocol
        ("GET", "/git/mallory/fns.git/HEAD", 404),
        ("GET", "/git/mallory/fns.git/git-upload-pack", 405),
        ("GET", "/git/-bad/fns.git/info/refs?service=git-upload-pack", 404),
        ("GET", "/git/mallory/.hidden.git/info/refs?service=git-upload-pack", 404),
        ("GET", "/elsewhere", 404),
    ],
    ids=["dumb-http", "unknown-file", "wrong-method", "bad-owner", "dot-repo", "other-path"],
)
def test_requests_outside_the_smart_protocol_are_refused(
    remote: GitRemote, pushed: tuple[str, str], method: str, path: str, status: int
) -> None:
    token, _ = pushed

    answer = requests.request(method, remote.url + path, auth=("mallory", token), timeout=10)

    assert answer.status_code == status


def test_no_token_or_secret_reaches_the_server_log(
    remote: GitRemote, pushed: tuple[str, str], tmp_path: Path
) -> None:
    token, _ = pushed
    clone(remote.read_url("mallory", "fns"), tmp_path / "copy")
    info_refs(remote, "mallory/fns.git", "git-upload-pack", ("mallory", "a-wrong-token"))

    log = remote.log()

    assert "push Alice/fns" in log or "mallory" in log  # the log is being written
    secrets = [
        remote.webhook_secret,
        remote.payload_secret,
        read_token(remote.payload_secret, "mallory", "fns"),
        "a-wrong-token",
        *remote.tokens.values(),
    ]
    for secret in secrets:
        assert secret not in log
