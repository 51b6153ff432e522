"""pipeline-log: build logs by owner, repository, commit and function; and delivery claims.

Every request is signed with the ``payload-secret`` (``X-Cloud-Signature``, 401 otherwise),
reads included: the original served any build log to anyone who asked.

* ``POST /`` with a ``PipelineLog`` body, signed over the body: stores ``data`` under
  ``<owner>/<repo>/<sha>/<function>/build.log`` → 200 ``stored <n> bytes``.
* ``GET /?owner=&repo=&sha=&function=``, signed over the canonical query string
  ``owner=<o>&repo=<r>&sha=<s>&function=<f>`` (that order, URL-encoded: build it with
  ``sdk.logstore.read_query`` or ``LogKey.query`` and request exactly that) → 200
  ``text/plain`` log, 404 when there is none, 400 naming a bad parameter.
* ``POST /status`` with a ``CommitStatus`` body (as github-status receives it), signed over
  the body: keeps it as the last status of that function's build at that commit → 200.
  Every status is kept, GitHub or not: the dashboard shows them to users of the
  built-in git remote too.
* ``GET /builds?owner=&repo=&function=``, signed over ``owner=<o>&repo=<r>&function=<f>``
  (``sdk.logstore.builds_query``) → 200 ``{"builds": [{"sha": ..., "time": <unix s>}]}``,
  the function's builds newest first (at most 50) with the ``state`` and ``description``
  of their last status: the dashboard's history.
* ``POST /claim`` with ``{"name": "<name>"}``, signed over the body → 201 the first time a
  name is claimed, 409 after: github-event claims each webhook delivery id with it.
  ``DELETE /claim`` with the same body releases it (200): github-event does when it could
  not queue the delivery's work, so GitHub's redelivery is not taken for a duplicate.

Environment, read once at start (a bad value makes every call answer 500 saying which):
``log_storage`` (``file`` or ``s3``, default ``file``); ``log_dir`` (file backend root,
default ``$HOME/pipeline-logs``; on the embedded runtime HOME is per deployment, so set
it to a lasting folder); ``s3_url`` (``host:port`` or URL; empty: AWS), ``s3_bucket``
(``pipeline``), ``s3_region`` (``us-east-1``), ``s3_tls`` (false); ``secret_mount_path``.
Secrets: ``payload-secret``; ``s3-access-key`` and ``s3-secret-key`` for S3.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdk.config import ConfigError, env_bool, env_str
from sdk.events import CommitStatus, PipelineLog, RecordError
from sdk.function import Rejected, answer, check_cloud_signature, configured, parse_json
from sdk.logstore import (
    FileLogStore,
    LogKey,
    LogStore,
    LogStoreError,
    S3LogStore,
    builds_query,
    read_query,
    validate_claim_name,
)
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret

log = logging.getLogger("pipeline-log")

STORAGES = ("file", "s3")
# Methods per path, for the Allow header of a 405.
ALLOW = {
    "": "GET, HEAD, POST",
    "/claim": "POST, DELETE",
    "/builds": "GET, HEAD",
    "/status": "POST",
}


@dataclass(frozen=True)
class Config:
    """Settings from the environment; secrets are read by :func:`build`."""

    secret_mount_path: str
    log_storage: str
    log_dir: str
    s3_url: str
    s3_bucket: str
    s3_region: str
    s3_tls: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        storage = env_str(env, "log_storage", "file").lower()
        if storage not in STORAGES:
            raise ConfigError(f"log_storage={storage!r}: expected file or s3")
        home = env.get("HOME", "").strip() or "."
        return cls(
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            log_storage=storage,
            log_dir=env_str(env, "log_dir", str(Path(home) / "pipeline-logs")),
            s3_url=env_str(env, "s3_url", ""),
            s3_bucket=env_str(env, "s3_bucket", "pipeline"),
            s3_region=env_str(env, "s3_region", "us-east-1"),
            s3_tls=env_bool(env, "s3_tls", False),
        )


class PipelineLogService:
    """The typed core: a signed request in, a status and a text out."""

    def __init__(self, store: LogStore, payload_secret: str) -> None:
        self.store = store
        self.payload_secret = payload_secret

    def store_log(self, body: bytes, headers: Any) -> tuple[int, str]:
        check_cloud_signature(body, headers, self.payload_secret)
        try:
            record = PipelineLog.from_json(parse_json(body))
            key = LogKey(record.owner, record.repo, record.sha, record.function)
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None
        size = len(record.data.encode())
        self.store.put(key, record.data)
        log.info("stored %d bytes at %s (from %s)", size, key.path, record.source)
        return 200, f"stored {size} bytes"

    def read_log(self, query: Mapping[str, str], headers: Any) -> tuple[int, str]:
        parts = [query.get(name, "") for name in ("owner", "repo", "sha", "function")]
        check_cloud_signature(read_query(*parts).encode(), headers, self.payload_secret)
        try:
            key = LogKey(*parts)
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None
        data = self.store.get(key)
        if data is None:
            return 404, f"no build log at {key.path}"
        return 200, data

    def store_status(self, body: bytes, headers: Any) -> tuple[int, str]:
        check_cloud_signature(body, headers, self.payload_secret)
        try:
            status = CommitStatus.from_json(parse_json(body))
            key = LogKey(status.owner, status.repo, status.sha, status.context)
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None
        record = {"state": status.state, "description": status.description, "time": time.time()}
        self.store.put_status(key, json.dumps(record))
        return 200, f"stored the {status.state} status of {key.status_path}"

    def list_builds(self, query: Mapping[str, str], headers: Any) -> tuple[int, str]:
        parts = [query.get(name, "") for name in ("owner", "repo", "function")]
        check_cloud_signature(builds_query(*parts).encode(), headers, self.payload_secret)
        try:
            builds = self.store.builds(*parts)
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None
        listed = [
            {"sha": b.sha, "time": round(b.time, 3), "state": b.state, "description": b.description}
            for b in builds
        ]
        return 200, json.dumps({"builds": listed})

    def _claim_name(self, body: bytes, headers: Any) -> str:
        check_cloud_signature(body, headers, self.payload_secret)
        request = parse_json(body)
        name = request.get("name") if isinstance(request, dict) else None
        try:
            return validate_claim_name(name)
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None

    def release(self, body: bytes, headers: Any) -> tuple[int, str]:
        name = self._claim_name(body, headers)
        self.store.release(name)
        log.info("released %s", name)
        return 200, f"released {name}"

    def claim(self, body: bytes, headers: Any) -> tuple[int, str]:
        name = self._claim_name(body, headers)
        if self.store.claim(name):
            log.info("claimed %s", name)
            return 201, f"claimed {name}"
        log.info("%s was already claimed", name)
        return 409, f"{name} was already claimed"

    def route(self, event: Any) -> tuple[int, str]:
        path = event.path.rstrip("/")
        if event.method in ("GET", "HEAD") and path == "":
            return self.read_log(event.query, event.headers)
        if event.method == "POST" and path == "":
            return self.store_log(event.body, event.headers)
        if event.method in ("GET", "HEAD") and path == "/builds":
            return self.list_builds(event.query, event.headers)
        if event.method == "POST" and path == "/claim":
            return self.claim(event.body, event.headers)
        if event.method == "POST" and path == "/status":
            return self.store_status(event.body, event.headers)
        if event.method == "DELETE" and path == "/claim":
            return self.release(event.body, event.headers)
        if path in ALLOW:
            raise Rejected(405, f"{event.method} is not allowed on {path or '/'}")
        raise Rejected(404, f"no such endpoint {event.path}: use /, /builds, /status or /claim")


def build(cfg: Config) -> PipelineLogService:
    """The service with its backend; raises ConfigError/SecretMissing/ValueError when misconfigured."""
    payload_secret = read_secret("payload-secret", cfg.secret_mount_path)
    store: LogStore
    if cfg.log_storage == "s3":
        s3 = S3LogStore(
            cfg.s3_bucket,
            endpoint_url=cfg.s3_url,
            region=cfg.s3_region,
            access_key=read_secret("s3-access-key", cfg.secret_mount_path),
            secret_key=read_secret("s3-secret-key", cfg.secret_mount_path),
            tls=cfg.s3_tls,
        )
        store, where = s3, f"S3 bucket {cfg.s3_bucket} at {s3.endpoint_url or 'AWS'}"
    else:
        store = FileLogStore(cfg.log_dir)
        where = cfg.log_dir
    log.info("storing build logs in %s", where)
    return PipelineLogService(store, payload_secret)


# Startup errors: a bad setting, a secret that is not mounted, a storage root that cannot be made.
SERVICE = configured(
    lambda: build(Config.from_env(os.environ)),
    "pipeline-log",
    errors=(ConfigError, SecretMissing, ValueError, OSError),
)


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(SERVICE, Exception):
        return answer(500, f"pipeline-log is misconfigured: {SERVICE}")
    try:
        status, text = SERVICE.route(event)
    except Rejected as exc:
        reply = answer(exc.status, exc.message)
        if exc.status == 405:
            reply["headers"]["Allow"] = ALLOW[event.path.rstrip("/")]
        return reply
    except LogStoreError as exc:
        log.error("storage failed: %s", exc)
        return answer(500, f"storage failed: {exc}")
    if status == 200 and event.path.rstrip("/") == "/builds":
        return {"statusCode": 200, "body": text, "headers": {"Content-Type": "application/json"}}
    if status == 200 and event.method in ("GET", "HEAD"):
        # The log exactly as stored: answer() would normalise its trailing newline.
        return {
            "statusCode": 200,
            "body": text,
            "headers": {"Content-Type": "text/plain; charset=utf-8"},
        }
    return answer(status, text)
