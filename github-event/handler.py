"""github-event: the GitHub App's webhook receiver.

Checks the signature before reading anything else, then:

* ``ping`` (sent when the App is created): 200 ``pong``;
* ``push`` to a branch, with commits, by a customer: queued for github-push (202);
  a branch deletion, a tag push or a push with no commits starts nothing (202);
* ``installation`` deleted / ``installation_repositories`` removed: the owner's
  functions of those repositories are garbage-collected (202);
* any other event: 202 ``ignored``.

A redelivery of a delivery id already handled answers 200 ``duplicate`` and starts
nothing. Everything long happens asynchronously, so GitHub gets its answer well within
its 10 seconds. ``GET ?setup_action=install`` is the App's setup landing page.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sdk.audit import Auditor
from sdk.config import ConfigError, env_bool, env_str
from sdk.customers import Customers
from sdk.events import AuditEvent, GarbageRequest, PushEvent, RecordError
from sdk.function import Rejected, answer, configured
from sdk.gateway import GatewayClient, GatewayError
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret
from sdk.signing import CLOUD_SIGNATURE, sign, verify_github

log = logging.getLogger("github-event")

HANDLED = ("push", "installation", "installation_repositories", "ping")
ZERO_SHA = "0" * 40


@dataclass(frozen=True)
class Config:
    """Settings from the environment (gateway_config.yml and github.yml in stack.yml)."""

    gateway_url: str
    secret_mount_path: str
    customers_path: str
    customers_url: str
    validate_customers: bool
    audit_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        path = env_str(env, "customers_path", "")
        url = env_str(env, "customers_url", "")
        validate = env_bool(env, "validate_customers", bool(path or url))
        if validate and not (path or url):
            raise ConfigError(
                "validate_customers is on but neither customers_path nor customers_url is set"
            )
        if path and url:
            raise ConfigError("set customers_path or customers_url, not both")
        return cls(
            gateway_url=env_str(env, "gateway_url", "http://127.0.0.1:8080"),
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            customers_path=path,
            customers_url=url,
            validate_customers=validate,
            audit_url=env_str(env, "audit_url", ""),
        )


class Receiver:
    """The typed core: one delivery in, one answer out."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.gateway = GatewayClient(cfg.gateway_url, timeout=8.0)
        self.customers = (
            Customers(path=cfg.customers_path or None, url=cfg.customers_url or None)
            if cfg.validate_customers
            else None
        )
        self.auditor = Auditor(
            cfg.audit_url or None, payload_secret=self.optional_secret("payload-secret")
        )

    def optional_secret(self, name: str) -> str:
        try:
            return read_secret(name, self.cfg.secret_mount_path)
        except SecretMissing:
            return ""

    def secret(self, name: str) -> str:
        try:
            return read_secret(name, self.cfg.secret_mount_path)
        except SecretMissing as exc:
            log.error("%s", exc)
            raise Rejected(500, f"the platform is misconfigured: {exc}") from None

    def receive(
        self, body: bytes, headers: Any, method: str, query: Mapping[str, str]
    ) -> tuple[int, str]:
        if method == "GET" and query.get("setup_action") == "install":
            return (
                200,
                "Installation complete: push to a repository the App can see to deploy its stack.yml.",
            )
        if not verify_github(body, headers, self.secret("github-webhook-secret")):
            return 401, "missing or invalid X-Hub-Signature-256"
        event = headers.get("X-GitHub-Event", "")
        delivery = headers.get("X-GitHub-Delivery", "")
        if event not in HANDLED:
            return 202, f"ignored: event {event or '(none)'} is not handled"
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return 400, f"body is not valid JSON: {exc}"
        if not isinstance(payload, dict):
            return 400, "body must be a JSON object"
        if event == "ping":
            return 200, f"pong: {payload.get('zen', '')}".rstrip(": ")
        if event == "push":
            return self.push(payload, delivery)
        return self.installation(event, payload, delivery)

    # -- push ------------------------------------------------------------------------------------
    def push(self, payload: dict[str, Any], delivery: str) -> tuple[int, str]:
        if payload.get("deleted") or payload.get("after") == ZERO_SHA:
            return 202, f"ignored: {payload.get('ref', '')} was deleted"
        ref = str(payload.get("ref", ""))
        if not ref.startswith("refs/heads/"):
            return 202, f"ignored: {ref} is not a branch"
        if not payload.get("commits"):
            # e.g. a branch created at a commit that was already built
            return 202, "ignored: the push has no commits"
        try:
            push = PushEvent.from_github(payload, delivery)
        except RecordError as exc:
            return 400, str(exc)
        refusal = self.refuse_owner(push.owner)
        if refusal:
            return 403, refusal
        if not self.first_delivery(delivery):
            return 200, f"duplicate: delivery {delivery} was already handled"
        body = json.dumps(push.to_json()).encode()
        with self.released_on_failure(delivery):
            self.call_async("github-push", body, delivery)
        log.info("push %s@%s (%s) queued for github-push", push.full_name, push.sha[:12], delivery)
        return 202, f"accepted: {push.full_name}@{push.sha[:12]} will be built"

    # -- installation events ----------------------------------------------------------------------
    def installation(self, event: str, payload: dict[str, Any], delivery: str) -> tuple[int, str]:
        account = (payload.get("installation") or {}).get("account") or {}
        owner = account.get("login")
        if not isinstance(owner, str) or not owner:
            return 400, "installation.account.login is missing"
        action = payload.get("action", "")
        refusal = self.refuse_owner(owner)
        if refusal:
            return 403, refusal
        if event == "installation" and action == "deleted":
            repos = ["*"]
        elif event == "installation_repositories" and action == "removed":
            repos = [r["name"] for r in payload.get("repositories_removed") or [] if "name" in r]
        else:
            added = [
                r.get("full_name", "")
                for r in payload.get("repositories_added") or payload.get("repositories") or []
            ]
            self.auditor.post(
                AuditEvent("github-event", f"{event} {action}: {', '.join(added)}", owner)
            )
            return 202, f"noted: {event} {action}"
        if not self.first_delivery(delivery):
            return 200, f"duplicate: delivery {delivery} was already handled"
        with self.released_on_failure(delivery):
            for repo in repos:  # garbage-collect is idempotent: a redelivery may queue again
                request = GarbageRequest(owner=owner, repo=repo, functions=[])
                self.call_async(
                    "garbage-collect", json.dumps(request.to_json()).encode(), f"{delivery}-{repo}"
                )
        log.info("%s %s by %s: garbage-collecting %s", event, action, owner, ", ".join(repos))
        return 202, f"accepted: removing the functions of {owner}/{', '.join(repos)}"

    # -- helpers ---------------------------------------------------------------------------------
    def refuse_owner(self, owner: str) -> str:
        if self.customers is not None and not self.customers.allows(owner):
            log.info("refused a delivery from %s: not a customer", owner)
            return f"{owner} is not on this platform's customers list"
        return ""

    def first_delivery(self, delivery: str) -> bool:
        """Claim the delivery id in pipeline-log's store; False when it was claimed before.

        When the store cannot be reached the delivery is handled anyway (and logged):
        a lost webhook is worse than a rare duplicate build.
        """
        if not delivery:
            return True
        claim = json.dumps({"name": f"delivery-{delivery}"}).encode()
        try:
            response = self.gateway.invoke(
                "pipeline-log",
                claim,
                path="claim",
                headers={CLOUD_SIGNATURE: sign(claim, self.secret("payload-secret"))},
            )
        except GatewayError as exc:
            log.warning("cannot record delivery %s, handling it anyway: %s", delivery, exc)
            return True
        if response.status_code == 409:
            return False
        if response.status_code not in (200, 201):
            log.warning(
                "pipeline-log answered %d recording delivery %s", response.status_code, delivery
            )
        return True

    @contextmanager
    def released_on_failure(self, delivery: str) -> Iterator[None]:
        """Release the delivery's claim when its work could not be queued (and re-raise).

        GitHub (and the built-in git remote) delivers again after a failed answer; with
        the claim kept, that redelivery would be dropped as a duplicate and the push lost.
        """
        try:
            yield
        except Rejected:
            if delivery:
                self._release(delivery)
            raise

    def _release(self, delivery: str) -> None:
        claim = json.dumps({"name": f"delivery-{delivery}"}).encode()
        try:
            response = self.gateway.invoke(
                "pipeline-log", claim, method="DELETE", path="claim",
                headers={CLOUD_SIGNATURE: sign(claim, self.secret("payload-secret"))},
            )  # fmt: skip
            if response.status_code == 200:
                log.info("released delivery %s for a redelivery", delivery)
                return
            log.error("pipeline-log answered %d releasing delivery %s", response.status_code, delivery)
        except GatewayError as exc:
            log.error("cannot release delivery %s: its redelivery will be refused: %s", delivery, exc)

    def call_async(self, function: str, body: bytes, call_id: str) -> None:
        headers = {CLOUD_SIGNATURE: sign(body, self.secret("payload-secret"))}
        if call_id:
            headers["X-Call-Id"] = call_id
        try:
            self.gateway.invoke_async(function, body, headers=headers)
        except GatewayError as exc:
            log.error("cannot queue %s: %s", function, exc)
            raise Rejected(502, f"cannot queue {function}: {exc.message}") from None


RECEIVER = configured(lambda: Receiver(Config.from_env(os.environ)), "github-event")


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(RECEIVER, ConfigError):
        return answer(500, f"github-event is misconfigured: {RECEIVER}")
    try:
        status, text = RECEIVER.receive(event.body, event.headers, event.method, event.query)
    except Rejected as exc:
        status, text = exc.status, exc.message
    return answer(status, text)
