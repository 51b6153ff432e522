"""Push events in GitHub's shape, built from a repository's refs before and after a push.

One event per changed branch or tag, as GitHub sends them: ``ref``, ``before``,
``after``, ``created``, ``deleted``, ``forced``, ``commits`` (at most
:data:`MAX_COMMITS`, oldest first, each with the files it added, removed and
modified against its first parent), ``head_commit``, ``repository`` (every field
GitHub's schema requires; ``private`` is always true), ``pusher`` and ``sender``. There
is no ``installation``: no GitHub App is involved. URLs point at this server
(``OFC_GIT_PUBLIC_URL``): ``clone_url`` is ``<public>/git/<owner>/<repo>.git``, which is
how the pipeline can tell such a push from one on GitHub.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gitserver.repos import ZERO_SHA, Repo
from gitserver.users import User

__all__ = ["MAX_COMMITS", "PushContext", "RefChange", "push_payload", "ref_changes", "repo_id"]

MAX_COMMITS = 20
EVENT_PREFIXES = ("refs/heads/", "refs/tags/")
# Fields of one commit in `git log -z`: names and emails cannot hold a newline, so only
# the message (last) can, and -z puts a NUL between commits.
_LOG_FORMAT = "%H%n%T%n%P%n%an%n%ae%n%aI%n%cn%n%ce%n%B"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_FILE_STATUS = {"A": "added", "D": "removed", "M": "modified", "T": "modified"}


@dataclass(frozen=True)
class RefChange:
    """One ref a push changed; ``before``/``after`` are all zeros when it was created/deleted."""

    ref: str
    before: str
    after: str

    @property
    def created(self) -> bool:
        return self.before == ZERO_SHA

    @property
    def deleted(self) -> bool:
        return self.after == ZERO_SHA


def ref_changes(before: dict[str, str], after: dict[str, str]) -> list[RefChange]:
    """The branches and tags whose target differs between two snapshots, in ref order."""
    changes = []
    for ref in sorted(before.keys() | after.keys()):
        old, new = before.get(ref, ZERO_SHA), after.get(ref, ZERO_SHA)
        if old != new and ref.startswith(EVENT_PREFIXES):
            changes.append(RefChange(ref, old, new))
    return changes


def repo_id(owner: str, repo: str) -> int:
    """A stable id for ``owner/repo`` (any case): the same repository always gets the same."""
    digest = hashlib.sha256(f"{owner}/{repo}".lower().encode()).hexdigest()
    return 100_000 + int(digest[:12], 16)


@dataclass(frozen=True)
class PushContext:
    """What every event of one push shares."""

    owner: User
    pusher: User
    repo_name: str  # as spelled at the first push
    created_at: int  # Unix seconds
    default_branch: str
    public_url: str  # this server, as clients reach it

    @property
    def full_name(self) -> str:
        return f"{self.owner.name}/{self.repo_name}"

    @property
    def html_url(self) -> str:
        return f"{self.public_url}/git/{self.full_name}"

    @property
    def clone_url(self) -> str:
        return f"{self.html_url}.git"


async def push_payload(
    repo: Repo, ctx: PushContext, change: RefChange, old_tips: list[str]
) -> dict[str, Any]:
    """GitHub's ``push`` payload for ``change``; ``old_tips`` are every ref's target before
    the push (what was already there decides ``distinct``)."""
    is_branch = change.ref.startswith("refs/heads/")
    commits: list[dict[str, Any]] = []
    head: dict[str, Any] | None = None
    forced = False
    if not change.deleted:
        new_ids = set(await _rev_list(repo, change.after, old_tips))
        if is_branch:
            since = old_tips if change.created else [change.before]
            commits = await _commits(repo, ctx, change.after, since, new_ids)
            if not change.created:
                forced = not await _is_ancestor(repo, change.before, change.after)
        else:
            forced = not change.created  # a tag moved
        if commits:
            head = commits[-1]
        else:  # a branch created at a known commit, or a tag: GitHub still names the commit
            head = (await _commits(repo, ctx, f"{change.after}^{{commit}}", None, new_ids, 1))[0]
    return {
        "ref": change.ref,
        "before": change.before,
        "after": change.after,
        "repository": _repository(ctx),
        "pusher": {"name": ctx.pusher.name, "email": None},
        "sender": _user(ctx, ctx.pusher),
        "created": change.created,
        "deleted": change.deleted,
        "forced": forced,
        "base_ref": None,
        "compare": f"{ctx.html_url}/compare/{change.before[:12]}...{change.after[:12]}",
        "commits": commits,
        "head_commit": head,
    }


async def _rev_list(repo: Repo, tip: str, exclude: list[str]) -> list[str]:
    args = ["rev-list", tip, *(f"^{sha}" for sha in exclude if sha != ZERO_SHA)]
    return (await repo.text(*args)).split()


async def _is_ancestor(repo: Repo, old: str, new: str) -> bool:
    code, _ = await repo.git("merge-base", "--is-ancestor", old, new, ok=(0, 1))
    return code == 0


async def _commits(
    repo: Repo,
    ctx: PushContext,
    tip: str,
    exclude: list[str] | None,
    new_ids: set[str],
    limit: int = MAX_COMMITS,
) -> list[dict[str, Any]]:
    """The newest ``limit`` commits of ``tip`` not reachable from ``exclude``, oldest first."""
    args = ["log", "-z", f"--format={_LOG_FORMAT}", f"--max-count={limit}", "--reverse"]
    args += [tip, *(f"^{sha}" for sha in (exclude or []) if sha != ZERO_SHA)]
    if exclude is None:
        args.insert(1, "--no-walk")
    out = (await repo.git(*args))[1].decode(errors="replace")
    commits = []
    for record in filter(None, out.split("\0")):
        sha, tree, parents, an, ae, date, cn, ce, message = record.split("\n", 8)
        files = await _files(repo, sha, parents.split())
        commits.append(
            {
                "id": sha,
                "tree_id": tree,
                "distinct": sha in new_ids,
                "message": message.rstrip(),
                "timestamp": date,
                "url": f"{ctx.html_url}/commit/{sha}",
                "author": _person(an, ae),
                "committer": _person(cn, ce),
                **files,
            }
        )
    return commits


async def _files(repo: Repo, sha: str, parents: list[str]) -> dict[str, list[str]]:
    """Paths added, removed and modified by a commit against its first parent."""
    base = [parents[0], sha] if parents else ["--root", sha]
    out = await repo.git("diff-tree", "-r", "-z", "--no-renames", "--name-status", *base)
    fields = out[1].decode(errors="replace").split("\0")
    if not parents:
        fields = fields[1:]  # --root prints the commit id first
    files: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
    for status, path in zip(fields[0::2], fields[1::2], strict=False):
        kind = _FILE_STATUS.get(status[:1])
        if kind:
            files[kind].append(path)
    return files


def _person(name: str, email: str) -> dict[str, Any]:
    # GitHub's schema wants an email address or null; git takes any text.
    return {"name": name, "email": email if _EMAIL.fullmatch(email) else None}


def _user(ctx: PushContext, user: User) -> dict[str, Any]:
    """GitHub's "Simple User", pointing at this server rather than at GitHub."""
    base = f"{ctx.public_url}/git/{user.name}"
    return {
        "login": user.name,
        "id": user.id,
        "node_id": f"OFC_U_{user.id}",
        "avatar_url": f"{base}/avatar",
        "gravatar_id": "",
        "url": base,
        "html_url": base,
        "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}",
        "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs",
        "repos_url": f"{base}/repos",
        "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events",
        "type": "User",
        "site_admin": False,
    }


# Templated URL fields GitHub's repository object must have; this server serves none of
# them, but consumers expect the shape.
# The URL fields GitHub puts in a push event's repository, relative to the repository's URL.
REPOSITORY_URL_FIELDS = {
    "forks_url": "forks",
    "keys_url": "keys{/key_id}",
    "collaborators_url": "collaborators{/collaborator}",
    "teams_url": "teams",
    "hooks_url": "hooks",
    "issue_events_url": "issues/events{/number}",
    "events_url": "events",
    "assignees_url": "assignees{/user}",
    "branches_url": "branches{/branch}",
    "tags_url": "tags",
    "blobs_url": "git/blobs{/sha}",
    "git_tags_url": "git/tags{/sha}",
    "git_refs_url": "git/refs{/sha}",
    "trees_url": "git/trees{/sha}",
    "statuses_url": "statuses/{sha}",
    "languages_url": "languages",
    "stargazers_url": "stargazers",
    "contributors_url": "contributors",
    "subscribers_url": "subscribers",
    "subscription_url": "subscription",
    "commits_url": "commits{/sha}",
    "git_commits_url": "git/commits{/sha}",
    "comments_url": "comments{/number}",
    "issue_comment_url": "issues/comments{/number}",
    "contents_url": "contents/{+path}",
    "compare_url": "compare/{base}...{head}",
    "merges_url": "merges",
    "archive_url": "{archive_format}{/ref}",
    "downloads_url": "downloads",
    "issues_url": "issues{/number}",
    "pulls_url": "pulls{/number}",
    "milestones_url": "milestones{/number}",
    "notifications_url": "notifications{?since,all,participating}",
    "labels_url": "labels{/name}",
    "releases_url": "releases{/id}",
    "deployments_url": "deployments",
}


def _repository(ctx: PushContext) -> dict[str, Any]:
    owner = _user(ctx, ctx.owner)
    owner.update(name=ctx.owner.name, email=None)
    rid = repo_id(ctx.owner.name, ctx.repo_name)
    now = int(time.time())
    return {
        "id": rid,
        "node_id": f"OFC_R_{rid}",
        "name": ctx.repo_name,
        "full_name": ctx.full_name,
        "private": True,
        "owner": owner,
        "html_url": ctx.html_url,
        "description": None,
        "fork": False,
        "url": ctx.html_url,
        **{key: f"{ctx.html_url}/{suffix}" for key, suffix in REPOSITORY_URL_FIELDS.items()},
        "created_at": ctx.created_at,
        "updated_at": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pushed_at": now,
        "git_url": ctx.clone_url,  # no git:// or ssh here: the one way in is HTTP
        "ssh_url": ctx.clone_url,
        "clone_url": ctx.clone_url,
        "svn_url": ctx.html_url,
        "homepage": None,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": None,
        "has_issues": False,
        "has_projects": False,
        "has_downloads": False,
        "has_wiki": False,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": 0,
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": 0,
        "license": None,
        "allow_forking": False,
        "is_template": False,
        "topics": [],
        "visibility": "private",
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        "default_branch": ctx.default_branch,
        "stargazers": 0,
        "master_branch": ctx.default_branch,
    }
