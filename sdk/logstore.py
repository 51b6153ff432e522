"""Where build logs are kept: one text per function per commit, and delivery claims.

A log lives at ``<owner>/<repo>/<sha>/<function>/build.log`` (:attr:`LogKey.path`), the
same key in every backend. :meth:`LogStore.claim` is a create-if-absent marker under
``_claims/<name>``: github-event claims each webhook delivery id, and a redelivery finds
it taken. Owners must start with a letter or digit, so no log key can fall under
``_claims/``.

Backends: :class:`FileLogStore` (a directory; the embedded runtime's default) and
:class:`S3LogStore` (S3 or an S3-compatible server such as MinIO, through boto3, which is
imported only when that backend is built). Storage faults raise :class:`LogStoreError`;
no message carries a credential.

>>> LogKey("alexellis", "super-cake", "af6db", "slack-fn").path
'alexellis/super-cake/af6db/slack-fn/build.log'
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from sdk.openfaas import RecordError

__all__ = [
    "CLAIM_PREFIX",
    "Build",
    "FileLogStore",
    "LogKey",
    "LogKeyError",
    "LogStore",
    "LogStoreError",
    "S3LogStore",
    "MAX_BUILDS",
    "builds_query",
    "read_query",
    "validate_claim_name",
]

CLAIM_PREFIX = "_claims"
MAX_BUILDS = 50  # a build list holds at most this many, newest first
BUILD_FILE, STATUS_FILE = "build.log", "status.json"

# GitHub logins are letters, digits and '-'; GitLab namespaces and repository names add
# '_' and '.'. Leading letter or digit for owners keeps them apart from `_claims/`;
# repository names may start with '.' (".github") but are never "." or "..".
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
# A full commit id, or an abbreviation as git prints them (at least 4 hex digits).
_SHA = re.compile(r"^[0-9a-f]{4,40}$")
# A stack key: DNS-label-like, but case is kept (the original's `examplename-ExampleFunction`).
_FUNCTION = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$")
# Delivery ids are UUIDs; allow any short token that cannot name a path.
_CLAIM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


class LogKeyError(RecordError):
    """A key part or claim name that cannot be stored; the message names the part."""


class LogStoreError(Exception):
    """The backend failed (I/O, S3 error or unreachable); the message names no secret."""


def _check(part: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str) or not value:
        raise LogKeyError(f"{part} is required")
    if not pattern.match(value) or value in (".", ".."):
        raise LogKeyError(f"{part} {value!r} is invalid: {rule}")
    return value


def read_query(owner: str, repo: str, sha: str, function: str) -> str:
    """The query string of a log read, which is also what its ``X-Cloud-Signature`` signs.

    Parameters in this order, URL-encoded, so the bytes are the same whoever builds them:

    >>> read_query("alexellis", "super-cake", "af6db", "slack-fn")
    'owner=alexellis&repo=super-cake&sha=af6db&function=slack-fn'
    """
    return urlencode([("owner", owner), ("repo", repo), ("sha", sha), ("function", function)])


def builds_query(owner: str, repo: str, function: str) -> str:
    """The query string of a build list (``GET /builds``), which its signature signs.

    >>> builds_query("alexellis", "super-cake", "slack-fn")
    'owner=alexellis&repo=super-cake&function=slack-fn'
    """
    return urlencode([("owner", owner), ("repo", repo), ("function", function)])


@dataclass(frozen=True)
class Build:
    """One build of a function: its commit, when it was last recorded, and its last status.

    A build is listed when its log or a status of it was stored; ``state`` and
    ``description`` are those of the last status (``""`` when none was stored).
    """

    sha: str
    time: float  # unix seconds
    state: str = ""
    description: str = ""


def validate_claim_name(name: object) -> str:
    """Return ``name`` if it can be claimed, else raise :class:`LogKeyError`."""
    return _check(
        "claim name",
        name,
        _CLAIM,
        "use at most 200 letters, digits, '-', '_' and '.', starting with a letter or digit",
    )


@dataclass(frozen=True)
class LogKey:
    """Which log: ``owner``/``repo`` as the SCM spells them, commit ``sha``, stack key ``function``.

    Every part is checked when the key is made (:class:`LogKeyError`), so a key can never
    name a path outside its store: no '/', no '.' or '..' parts, no empty parts.
    """

    owner: str
    repo: str
    sha: str
    function: str

    def __post_init__(self) -> None:
        _check(
            "owner",
            self.owner,
            _OWNER,
            "use letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
        _check("repo", self.repo, _REPO, "use at most 100 letters, digits, '-', '_' and '.'")
        _check("sha", self.sha, _SHA, "expected 4 to 40 lower-case hex digits")
        _check(
            "function",
            self.function,
            _FUNCTION,
            "use at most 63 letters, digits and '-', starting and ending with a letter or digit",
        )

    @property
    def path(self) -> str:
        """``<owner>/<repo>/<sha>/<function>/build.log``"""
        return f"{self.owner}/{self.repo}/{self.sha}/{self.function}/build.log"

    @property
    def status_path(self) -> str:
        """``<owner>/<repo>/<sha>/<function>/status.json``: the last status of that build."""
        return f"{self.owner}/{self.repo}/{self.sha}/{self.function}/{STATUS_FILE}"

    @property
    def query(self) -> str:
        """``GET /function/pipeline-log?<query>`` reads this log; sign these bytes (see :func:`read_query`)."""
        return read_query(self.owner, self.repo, self.sha, self.function)


class LogStore(Protocol):
    """What pipeline-log needs from a storage backend."""

    def put(self, key: LogKey, data: str) -> None:
        """Store ``data`` (UTF-8) under ``key``, replacing any earlier log, all or nothing."""
        ...

    def get(self, key: LogKey) -> str | None:
        """The log under ``key``, or ``None`` when there is none."""
        ...

    def claim(self, name: str) -> bool:
        """Atomically mark ``name``: True the first time, False for every later call."""
        ...

    def release(self, name: str) -> None:
        """Unmark ``name`` (its work could not be started): the next claim succeeds again."""
        ...

    def put_status(self, key: LogKey, data: str) -> None:
        """Store ``data`` (a status as JSON) as the last status of ``key``'s build."""
        ...

    def builds(self, owner: str, repo: str, function: str) -> list[Build]:
        """The function's builds (a log or a status stored), newest first, at most
        :data:`MAX_BUILDS`."""
        ...


def _newest_builds(
    files: Iterable[tuple[str, str, float, Any]], read_status: Callable[[Any], str | None]
) -> list[Build]:
    """The newest :data:`MAX_BUILDS` builds among stored ``files`` (sha, file name, time,
    handle), reading the status of those builds only (``read_status(handle)``)."""
    times: dict[str, float] = {}
    statuses: dict[str, Any] = {}
    for sha, name, stamp, handle in files:
        times[sha] = max(stamp, times.get(sha, stamp))
        if name == STATUS_FILE:
            statuses[sha] = handle
    builds = []
    for sha in sorted(times, key=lambda s: (-times[s], s))[:MAX_BUILDS]:
        state = description = ""
        text = read_status(statuses[sha]) if sha in statuses else None
        if text is not None:
            try:
                record = json.loads(text)
                state = str(record.get("state", ""))
                description = str(record.get("description", ""))
            except (ValueError, AttributeError):
                pass  # a status that cannot be read leaves the build listed without one
        builds.append(Build(sha, times[sha], state, description))
    return builds


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None  # replaced or removed while listing


class FileLogStore:
    """Logs as files under ``root``; claims as files under ``root/_claims/``.

    Writes go to a temporary file in the target directory, are flushed to disk and
    renamed over the target, so a reader sees the old log or the new one, never part
    of one. A claim is ``open(O_CREAT | O_EXCL)``, atomic on a local file system.
    The directories are created on first use, not when the store is made.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, key: LogKey, data: str) -> None:
        self._write(key.path, data)

    def put_status(self, key: LogKey, data: str) -> None:
        self._write(key.status_path, data)

    def _write(self, relative: str, data: str) -> None:
        target = self.root / relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".build.log.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data.encode())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise LogStoreError(f"cannot write {relative}: {exc.strerror or exc}") from None

    def get(self, key: LogKey) -> str | None:
        try:
            return (self.root / key.path).read_bytes().decode()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise LogStoreError(f"cannot read {key.path}: {exc}") from None

    def builds(self, owner: str, repo: str, function: str) -> list[Build]:
        LogKey(owner, repo, "0000", function)  # the parts are checked as a key's are
        files = []
        try:
            for path in (self.root / owner / repo).glob(f"*/{function}/*"):
                if path.name in (BUILD_FILE, STATUS_FILE):
                    try:
                        stamp = path.stat().st_mtime
                    except FileNotFoundError:
                        continue  # replaced while listing
                    files.append((path.parent.parent.name, path.name, stamp, path))
        except OSError as exc:
            raise LogStoreError(f"cannot list {owner}/{repo}: {exc.strerror or exc}") from None
        return _newest_builds(files, _read_text)

    def claim(self, name: str) -> bool:
        validate_claim_name(name)
        folder = self.root / CLAIM_PREFIX
        try:
            folder.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return False
            os.close(fd)
        except OSError as exc:
            raise LogStoreError(f"cannot claim {name}: {exc.strerror or exc}") from None
        return True

    def release(self, name: str) -> None:
        validate_claim_name(name)
        try:
            (self.root / CLAIM_PREFIX / name).unlink(missing_ok=True)
        except OSError as exc:
            raise LogStoreError(f"cannot release {name}: {exc.strerror or exc}") from None


class S3LogStore:
    """Logs as objects in ``bucket`` of S3 or an S3-compatible server (MinIO, moto).

    ``endpoint_url`` is ``host:port`` (the scheme follows ``tls``) or a full URL whose
    scheme must agree with ``tls``; empty means AWS's own endpoint for ``region``.
    Addressing is path-style, which MinIO needs. The bucket is created on the first
    write that finds it missing, as the original pipeline-log did.

    A claim is ``PutObject`` with ``If-None-Match: *`` (S3 conditional writes, in
    botocore since 1.35; AWS, MinIO and moto answer 412 when the object exists), so it
    is atomic on the server. ``attempts`` bounds boto3's retries of a failed call (with
    back-off); ``client`` replaces the boto3 client (tests).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str,
        region: str,
        access_key: str,
        secret_key: str,
        tls: bool,
        attempts: int = 3,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = _endpoint(endpoint_url, tls)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=Config(
                    s3={"addressing_style": "path"},
                    connect_timeout=5,
                    read_timeout=30,
                    retries={"max_attempts": attempts, "mode": "standard"},
                ),
            )
        self.client = client
        self.region = region

    # -- LogStore ---------------------------------------------------------------------------------
    def put(self, key: LogKey, data: str) -> None:
        self._write(key.path, data.encode(), f"cannot write {key.path}")

    def get(self, key: LogKey) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key.path)
            return str(response["Body"].read().decode())
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
                return None
            raise LogStoreError(f"cannot read {key.path}: {_describe(exc)}") from None
        except (BotoCoreError, UnicodeDecodeError) as exc:
            raise LogStoreError(f"cannot read {key.path}: {_describe(exc)}") from None

    def put_status(self, key: LogKey, data: str) -> None:
        self._write(key.status_path, data.encode(), f"cannot write {key.status_path}")

    def builds(self, owner: str, repo: str, function: str) -> list[Build]:
        from botocore.exceptions import BotoCoreError, ClientError

        LogKey(owner, repo, "0000", function)  # the parts are checked as a key's are
        prefix = f"{owner}/{repo}/"
        files = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    parts = str(item["Key"])[len(prefix) :].split("/")
                    if len(parts) == 3 and parts[1] == function and parts[2] in (BUILD_FILE, STATUS_FILE):
                        stamp = item["LastModified"].timestamp()
                        files.append((parts[0], parts[2], stamp, str(item["Key"])))
            return _newest_builds(files, self._read_status)
        except ClientError as exc:
            if _code(exc) == "NoSuchBucket":
                return []
            raise LogStoreError(f"cannot list {prefix}: {_describe(exc)}") from None
        except BotoCoreError as exc:
            raise LogStoreError(f"cannot list {prefix}: {_describe(exc)}") from None

    def _read_status(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return str(body.read().decode("utf-8", "replace"))
        except ClientError:
            return None  # removed while listing

    def claim(self, name: str) -> bool:
        validate_claim_name(name)
        try:
            self._write(f"{CLAIM_PREFIX}/{name}", b"", f"cannot claim {name}", if_none_match=True)
        except _Conflict as exc:
            if exc.code == "PreconditionFailed":
                return False
            raise LogStoreError(f"cannot claim {name}: {exc.code}") from None
        return True

    def release(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        validate_claim_name(name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=f"{CLAIM_PREFIX}/{name}")
        except (BotoCoreError, ClientError) as exc:
            raise LogStoreError(f"cannot release {name}: {_describe(exc)}") from None

    # -- plumbing ---------------------------------------------------------------------------------
    def _write(self, key: str, body: bytes, what: str, *, if_none_match: bool = False) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra = {"IfNoneMatch": "*"} if if_none_match else {}
        # 409 ConditionalRequestConflict: another conditional write to the same key is in
        # flight; S3 asks the client to retry, and one of the writers then sees 412.
        for attempt in range(4):
            try:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)
                return
            except ClientError as exc:
                code = _code(exc)
                if code == "NoSuchBucket" and attempt == 0:
                    self._create_bucket()
                    continue
                if code == "ConditionalRequestConflict" and attempt < 3:
                    continue
                if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise _Conflict(code) from None
                raise LogStoreError(f"{what}: {_describe(exc)}") from None
            except BotoCoreError as exc:
                raise LogStoreError(f"{what}: {_describe(exc)}") from None

    def _create_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, Any] = {}
        if self.region and self.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(Bucket=self.bucket, **extra)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise LogStoreError(
                    f"cannot create bucket {self.bucket}: {_describe(exc)}"
                ) from None
        except BotoCoreError as exc:
            raise LogStoreError(f"cannot create bucket {self.bucket}: {_describe(exc)}") from None


class _Conflict(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _endpoint(url: str, tls: bool) -> str | None:
    url = url.strip().rstrip("/")
    if not url:
        return None
    scheme = "https" if tls else "http"
    if "://" not in url:
        return f"{scheme}://{url}"
    given = url.split("://", 1)[0].lower()
    if given != scheme:
        raise ValueError(
            f"S3 endpoint {url!r} uses {given} but TLS is {'on' if tls else 'off'}: "
            "give host:port, or make the scheme and the TLS setting agree"
        )
    return url


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: Exception) -> str:
    # botocore messages name the operation, the error code and the endpoint; never the keys.
    return str(exc) or type(exc).__name__
