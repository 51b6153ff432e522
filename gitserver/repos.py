"""The bare repositories the git remote serves, and the git commands run on them.

``<root>/<owner>/<repo>.git``, both names in lower case (owners and repositories are
matched without regard to case, as on GitHub). A repository remembers how its name was
spelled at the first push, and when it was created, in its own config (``ofc.name``,
``ofc.created``). Everything here runs git as a subprocess with :func:`gitserver.cgi.git_env`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gitserver.cgi import git_env

__all__ = ["GitError", "Repo", "RepoStore", "ZERO_SHA", "valid_repo_name"]

log = logging.getLogger(__name__)

ZERO_SHA = "0" * 40
DEFAULT_BRANCH = "main"
# GitHub's characters for repository names; a leading "." would hide the folder.
_REPO = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
_CONFIG = {
    "http.receivepack": "true",  # we authenticate; git need not see REMOTE_USER to allow it
    # git-tar fetches one commit by id (git fetch --depth 1 <url> <sha>), as from GitHub.
    "uploadpack.allowReachableSHA1InWant": "true",
    "uploadpack.allowAnySHA1InWant": "true",
    "receive.fsckObjects": "true",  # refuse corrupt objects at the door
}


class GitError(Exception):
    """A git command on a served repository failed."""


def valid_repo_name(name: str) -> bool:
    """True for a repository name GitHub would accept (``.git`` already taken off)."""
    return bool(_REPO.fullmatch(name))


@dataclass(frozen=True)
class Repo:
    """One bare repository, and the git commands the server runs on it."""

    path: Path
    home: Path  # HOME for git: no user configuration is read from it

    async def git(self, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
        """Run ``git <args>`` in the repository; :class:`GitError` on an exit not in ``ok``."""
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=self.path,
            env=git_env(self.home, GIT_DIR=str(self.path)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode is not None
        if proc.returncode not in ok:
            detail = err.decode(errors="replace").strip()
            raise GitError(f"git {args[0]} in {self.path} exited {proc.returncode}: {detail}")
        return proc.returncode, out

    async def text(self, *args: str) -> str:
        """The output of ``git <args>``, stripped."""
        return (await self.git(*args))[1].decode(errors="replace").strip()

    async def refs(self) -> dict[str, str]:
        """Every ref and the object it points at (annotated tags: the tag object)."""
        out = await self.text("for-each-ref", "--format=%(objectname) %(refname)")
        refs = {}
        for line in out.splitlines():
            sha, _, ref = line.partition(" ")
            refs[ref] = sha
        return refs

    async def meta(self) -> tuple[str, int]:
        """The repository's name as first pushed, and its creation time (Unix seconds)."""
        code, out = await self.git("config", "--get-regexp", r"^ofc\.", ok=(0, 1))
        values = dict(
            line.split(" ", 1) for line in out.decode(errors="replace").splitlines() if " " in line
        )
        name = values.get("ofc.name") or self.path.name.removesuffix(".git")
        created = values.get("ofc.created", "")
        return name, int(created) if created.isdigit() else int(self.path.stat().st_mtime)

    async def head_branch(self) -> str:
        """The branch HEAD names: the repository's default branch."""
        code, out = await self.git("symbolic-ref", "--short", "-q", "HEAD", ok=(0, 1))
        return out.decode().strip() or DEFAULT_BRANCH

    async def set_head_branch(self, branch: str) -> None:
        await self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}")


class RepoStore:
    """The repositories under ``root``, created on first push, one push at a time each."""

    def __init__(self, root: Path, home: Path) -> None:
        self.root = root
        self.home = home
        self._locks: dict[Path, asyncio.Lock] = {}

    def path(self, owner: str, repo: str) -> Path:
        return self.root / owner.lower() / f"{repo.lower()}.git"

    def path_info(self, owner: str, repo: str, rest: str) -> str:
        """The CGI ``PATH_INFO`` of ``rest`` in the repository, relative to ``root``."""
        return f"/{owner.lower()}/{repo.lower()}.git/{rest}"

    def get(self, owner: str, repo: str) -> Repo | None:
        """The repository, or ``None`` when it was never pushed to."""
        path = self.path(owner, repo)
        return Repo(path, self.home) if (path / "config").is_file() else None

    def lock(self, repo: Repo) -> asyncio.Lock:
        """The lock a push holds from its before-snapshot of the refs to its after-snapshot."""
        return self._locks.setdefault(repo.path, asyncio.Lock())

    async def create(self, owner: str, repo: str) -> Repo:
        """Create the bare repository (default branch ``main``) unless it exists; returns it.

        It is made under a temporary name and renamed into place, so a concurrent
        request never sees it half-configured.
        """
        path = self.path(owner, repo)
        async with self._locks.setdefault(path, asyncio.Lock()):
            existing = self.get(owner, repo)
            if existing is not None:
                return existing
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = Path(tempfile.mkdtemp(prefix=f".new-{path.name}-", dir=path.parent))
            try:
                scratch = Repo(tmp, self.home)
                await scratch.git("init", "-q", "--bare", "-b", DEFAULT_BRANCH, str(tmp))
                settings = {**_CONFIG, "ofc.name": repo, "ofc.created": str(int(time.time()))}
                for key, value in settings.items():
                    await scratch.git("config", key, value)
                tmp.rename(path)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        log.info("created repository %s/%s at %s", owner.lower(), repo, path)
        return Repo(path, self.home)
