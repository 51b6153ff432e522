"""The git remote's users: names and the SHA-256 of their tokens, in one JSON file.

``<state>/git/users.json`` maps each lower-case name to its record::

    {"alice": {"name": "Alice", "id": 100000, "token_sha256": "<64 hex>"}}

``name`` is spelled as it was given (it becomes the ``owner.login`` of push events, and
function names use it in lower case); ``id`` is the owner id the events carry, stable
for the user's lifetime. A token is 32 random bytes (``secrets.token_urlsafe``), shown
once by ``ofc user add`` and never stored: a plain SHA-256 is enough to keep, because
a random 256-bit token cannot be guessed from its hash, unlike a password.

The CLI writes the file (under an exclusive ``flock`` on ``users.json.lock``, replacing
it atomically) while the server reads it; the server notices a new file by its stat and
reloads it, so users added or removed take effect at once, without a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from sdk.gitremote import READ_USER

__all__ = ["FIRST_ID", "User", "UserError", "UserStore", "users_file", "validate_name"]

log = logging.getLogger(__name__)

FIRST_ID = 100_000
# GitHub's rule for logins: letters, digits and single hyphens, neither first nor last,
# at most 39 characters.
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Compared against when the name is unknown, so that a wrong name costs what a wrong
# token does.
_NO_SUCH_USER = hashlib.sha256(b"no such user").hexdigest()


def users_file(state_dir: Path) -> Path:
    """Where the users of the state directory ``state_dir`` are kept."""
    return state_dir / "git" / "users.json"


class UserError(ValueError):
    """A name that is not valid or not known, or a users file that cannot be read."""


@dataclass(frozen=True)
class User:
    """One user of the git remote."""

    name: str  # as given to ``ofc user add``
    id: int
    token_sha256: str

    @property
    def key(self) -> str:
        """The lower-case name: the key in ``users.json`` and the repositories' folder."""
        return self.name.lower()


def validate_name(name: str) -> str:
    """``name`` if it is a GitHub-style login other than the platform's read user, else
    :class:`UserError` saying why."""
    if not _NAME.fullmatch(name):
        raise UserError(
            f"user name {name!r}: letters, digits and single hyphens, at most 39 characters, "
            "not starting or ending with a hyphen (GitHub's rule for logins)"
        )
    if name.lower() == READ_USER:
        raise UserError(f"user name {name!r} is reserved for the platform's read tokens")
    return name


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token, as ``users.json`` keeps it."""
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore:
    """``users.json``: read by the server (cached until the file changes), written by the CLI."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, User] = {}

    # -- reading -------------------------------------------------------------------------------
    def users(self) -> dict[str, User]:
        """Every user by lower-case name; the last good copy if the file turns unreadable."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._users = None, {}
            return self._users
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                self._users = self.read()
            except UserError as exc:
                log.error("%s; still using the %d users read before", exc, len(self._users))
            self._stamp = stamp
        return self._users

    def get(self, name: str) -> User | None:
        """The user called ``name`` (any case), or ``None``."""
        return self.users().get(name.lower())

    def authenticate(self, name: str, token: str) -> User | None:
        """The user when ``token`` is theirs; ``None`` for a wrong name or token."""
        user = self.get(name)
        digest = user.token_sha256 if user is not None else _NO_SUCH_USER
        if hmac.compare_digest(token_hash(token), digest) and user is not None:
            return user
        return None

    def read(self) -> dict[str, User]:
        """Every user by lower-case name, read from the file now; :class:`UserError` if it
        cannot be read (the CLI reports that; the server keeps using the last good copy)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read the users file {self.path}: {exc}") from None
        if not isinstance(data, dict):
            raise UserError(f"the users file {self.path} is not a JSON object")
        users: dict[str, User] = {}
        for key, record in data.items():
            try:
                user = User(
                    name=str(record["name"]),
                    id=int(record["id"]),
                    token_sha256=str(record["token_sha256"]),
                )
            except (KeyError, TypeError, ValueError):
                raise UserError(f"the users file {self.path}: entry {key!r} is malformed") from None
            if key != user.key or not _HEX64.fullmatch(user.token_sha256):
                raise UserError(f"the users file {self.path}: entry {key!r} is malformed")
            users[key] = user
        return users

    # -- writing (the CLI) -----------------------------------------------------------------------
    def add(self, name: str) -> tuple[User, str]:
        """Create user ``name`` with a new token; returns the user and the token, which is
        not kept anywhere. :class:`UserError` if the name is invalid or taken (any case)."""
        validate_name(name)
        with self._locked():
            users = self.read()
            if name.lower() in users:
                raise UserError(f"user {users[name.lower()].name!r} already exists")
            token = secrets.token_urlsafe(32)
            # Ids are never below FIRST_ID and only grow while the newest user stays.
            next_id = max((u.id for u in users.values()), default=FIRST_ID - 1) + 1
            user = User(name=name, id=next_id, token_sha256=token_hash(token))
            users[user.key] = user
            self._write(users)
        return user, token

    def remove(self, name: str) -> User:
        """Delete user ``name`` (any case); :class:`UserError` if there is none. Their
        repositories stay on disk; a user added again under the name gets them back."""
        with self._locked():
            users = self.read()
            user = users.pop(name.lower(), None)
            if user is None:
                raise UserError(f"no user {name!r}")
            self._write(users)
        return user

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, users: dict[str, User]) -> None:
        """Replace the file in one step, so a reader sees the old or the new one, whole."""
        records = {key: asdict(user) for key, user in sorted(users.items())}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp makes it 0600
                json.dump(records, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise
