"""garbage-collect: remove an owner's functions that their repository no longer declares.

``POST /`` with a ``GarbageRequest`` (``owner``, ``repo`` or ``*`` for every repository,
``functions``: the stack keys to keep), ``X-Cloud-Signature`` over the body, checked
before anything else (401). A function is deleted only when all of these hold:

* its ``com.openfaas.cloud.git-owner`` label equals ``owner`` in any case (so owner ``a``
  never touches ``a-b-c`` deployed for owner ``a-b``; a function with no owner label is
  never touched);
* ``repo`` is ``*`` or its ``com.openfaas.cloud.git-repo`` label equals ``repo``;
* it is not labelled ``role: openfaas-system``;
* its name is ``lower(owner)-<key>`` and ``<key>`` is not in ``functions`` (any case).

Answers 200 ``{"deleted": [...], "kept": [...], "failed": [{"name", "error"}]}``: a delete
that fails is reported and logged and the others go on. 400 for a malformed request, 502
when the gateway cannot list functions. An audit event is posted when ``audit_url`` is set.

Environment, read once at start: ``gateway_url`` (``http://127.0.0.1:8080``),
``audit_url`` (empty: no audit), ``secret_mount_path``. Secrets: ``payload-secret``,
``basic-auth-user``, ``basic-auth-password``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sdk.audit import Auditor
from sdk.config import ConfigError, env_str
from sdk.events import AuditEvent, GarbageRequest, RecordError
from sdk.function import (
    Rejected,
    answer,
    check_cloud_signature,
    configured,
    json_answer,
    parse_json,
)
from sdk.gateway import GatewayClient, GatewayError
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret

log = logging.getLogger("garbage-collect")

OWNER_LABEL = "com.openfaas.cloud.git-owner"
REPO_LABEL = "com.openfaas.cloud.git-repo"
ALL_REPOS = "*"
GATEWAY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Config:
    gateway_url: str
    secret_mount_path: str
    audit_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            gateway_url=env_str(env, "gateway_url", "http://127.0.0.1:8080"),
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            audit_url=env_str(env, "audit_url", ""),
        )


@dataclass
class Outcome:
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"deleted": self.deleted, "kept": self.kept, "failed": self.failed}


def in_scope(function: Mapping[str, Any], request: GarbageRequest) -> bool:
    """True when ``function`` belongs to the request's owner and repository, and is not a system function."""
    labels = function.get("labels") or {}
    if labels.get("role") == "openfaas-system":
        return False
    owner = labels.get(OWNER_LABEL, "")
    if not owner or owner.lower() != request.owner.lower():
        return False
    return request.repo == ALL_REPOS or labels.get(REPO_LABEL) == request.repo


def doomed(name: str, request: GarbageRequest) -> bool:
    """True when in-scope function ``name`` is no longer among the request's stack keys.

    A name without the ``lower(owner)-`` prefix was not deployed by the pipeline: kept.
    """
    prefix = request.owner.lower() + "-"
    if not name.startswith(prefix):
        return False
    keep = {key.lower() for key in request.functions}
    return name[len(prefix) :].lower() not in keep


class Collector:
    """The typed core: a signed GarbageRequest in, what was deleted and kept out."""

    def __init__(self, gateway: GatewayClient, payload_secret: str, auditor: Auditor) -> None:
        self.gateway = gateway
        self.payload_secret = payload_secret
        self.auditor = auditor

    def receive(self, body: bytes, headers: Any) -> Outcome:
        check_cloud_signature(body, headers, self.payload_secret)
        try:
            request = GarbageRequest.from_json(parse_json(body))
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None
        if not request.owner.strip():
            raise Rejected(400, "GarbageRequest: owner must not be empty")
        if not request.repo.strip():
            raise Rejected(
                400, "GarbageRequest: repo must not be empty (use * for every repository)"
            )
        return self.collect(request)

    def collect(self, request: GarbageRequest) -> Outcome:
        try:
            functions = self.gateway.list_functions()
        except GatewayError as exc:
            log.error("cannot list functions: %s", exc)
            raise Rejected(502, f"cannot list functions: {exc.message}") from None
        outcome = Outcome()
        for function in sorted(functions, key=lambda f: str(f.get("name", ""))):
            name = str(function.get("name", ""))
            if not in_scope(function, request):
                continue
            if not doomed(name, request):
                outcome.kept.append(name)
                continue
            try:
                self.gateway.remove(name)
            except GatewayError as exc:
                if exc.status != 404:  # 404: removed meanwhile, which is what we wanted
                    log.error("cannot delete %s: %s", name, exc)
                    outcome.failed.append({"name": name, "error": exc.message or str(exc)})
                    continue
            log.info("deleted %s (%s/%s)", name, request.owner, request.repo)
            outcome.deleted.append(name)
        self.audit(request, outcome)
        return outcome

    def audit(self, request: GarbageRequest, outcome: Outcome) -> None:
        message = f"garbage collection deleted {len(outcome.deleted)} function(s)"
        if outcome.deleted:
            message += f": {', '.join(outcome.deleted)}"
        if outcome.failed:
            message += f"; could not delete {', '.join(f['name'] for f in outcome.failed)}"
        log.info("%s/%s: %s", request.owner, request.repo, message)
        self.auditor.post(AuditEvent("garbage-collect", message, request.owner, request.repo))


def build(cfg: Config) -> Collector:
    mount = cfg.secret_mount_path
    payload_secret = read_secret("payload-secret", mount)
    gateway = GatewayClient(
        cfg.gateway_url,
        read_secret("basic-auth-user", mount),
        read_secret("basic-auth-password", mount),
        timeout=GATEWAY_TIMEOUT,
    )
    return Collector(gateway, payload_secret, Auditor(cfg.audit_url, payload_secret=payload_secret))


# Startup errors: a bad setting, a secret that is not mounted, a storage root that cannot be made.
COLLECTOR = configured(
    lambda: build(Config.from_env(os.environ)),
    "garbage-collect",
    errors=(ConfigError, SecretMissing, ValueError, OSError),
)


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(COLLECTOR, Exception):
        return answer(500, f"garbage-collect is misconfigured: {COLLECTOR}")
    if event.method != "POST":
        reply = answer(405, f"{event.method} is not allowed: POST a GarbageRequest")
        reply["headers"]["Allow"] = "POST"
        return reply
    try:
        return json_answer(200, COLLECTOR.receive(event.body, event.headers).to_json())
    except Rejected as exc:
        return answer(exc.status, exc.message)
