"""audit-event: the platform's audit trail, one log line per event, forwarded to Slack.

``POST /`` with an ``AuditEvent`` body, ``X-Cloud-Signature`` over the body (401
otherwise; ``sdk.audit.Auditor(url, payload_secret=...)`` signs). The event is logged,
then, when ``slack_url`` is set, posted there as
``{"text": "[<source>] <owner>/<repo>: <message>"}`` within 5 seconds. Slack's trouble is
never the caller's: 200 ``audit: done`` when delivered (or not forwarded), 202
``audit: <reason>`` when Slack could not take it; 400 for a malformed event.

Environment, read once at start: ``slack_url`` (an incoming-webhook URL; it carries a
token, so it is never logged nor answered), ``secret_mount_path``. Secret:
``payload-secret``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from sdk.config import ConfigError, env_str
from sdk.events import AuditEvent, RecordError
from sdk.function import Rejected, answer, check_cloud_signature, configured, parse_json
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret

log = logging.getLogger("audit-event")

SLACK_TIMEOUT = 5.0


@dataclass(frozen=True)
class Config:
    secret_mount_path: str
    slack_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        slack_url = env_str(env, "slack_url", "")
        if slack_url:
            parts = urlsplit(slack_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                # The value may hold a token: name the variable, not the value.
                raise ConfigError("slack_url: expected an http:// or https:// URL")
        return cls(
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            slack_url=slack_url,
        )


def slack_text(event: AuditEvent) -> str:
    """The Slack line for ``event``, with Slack's control characters escaped.

    >>> slack_text(AuditEvent("garbage-collect", "deleted <2>", "alexellis", "fns"))
    '[garbage-collect] alexellis/fns: deleted &lt;2&gt;'
    >>> slack_text(AuditEvent("github-event", "installed"))
    '[github-event] installed'
    """
    where = "/".join(part for part in (event.owner, event.repo) if part)
    text = (
        f"[{event.source}] {where}: {event.message}"
        if where
        else f"[{event.source}] {event.message}"
    )
    # Slack reads <...> as links and mentions (<!channel>); the message is not trusted.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class AuditTrail:
    """The typed core: a signed event in, a status and a text out."""

    def __init__(self, cfg: Config, payload_secret: str, session: requests.Session) -> None:
        self.cfg = cfg
        self.payload_secret = payload_secret
        self.session = session

    def receive(self, body: bytes, headers: Any) -> tuple[int, str]:
        check_cloud_signature(body, headers, self.payload_secret)
        try:
            event = AuditEvent.from_json(parse_json(body))
        except RecordError as exc:
            raise Rejected(400, str(exc)) from None
        log.info("audit %s", _one_line(slack_text(event)))
        if not self.cfg.slack_url:
            return 200, "audit: done"
        reason = self.forward(event)
        if reason:
            log.warning("audit event from %s not forwarded: %s", event.source, reason)
            return 202, f"audit: {reason}"
        return 200, "audit: done"

    def forward(self, event: AuditEvent) -> str:
        """Post to Slack; the reason it failed, or "" when it worked."""
        try:
            response = self.session.post(
                self.cfg.slack_url, json={"text": slack_text(event)}, timeout=SLACK_TIMEOUT
            )
        except requests.Timeout:
            return f"slack_url did not answer within {SLACK_TIMEOUT:g} s"
        except requests.RequestException as exc:
            # The exception text holds the URL, and with it Slack's token.
            return f"cannot reach slack_url ({type(exc).__name__})"
        if response.status_code >= 300:
            return f"slack_url answered HTTP {response.status_code}"
        return ""


def build(cfg: Config) -> AuditTrail:
    return AuditTrail(cfg, read_secret("payload-secret", cfg.secret_mount_path), requests.Session())


# Startup errors: a bad setting, a secret that is not mounted, a storage root that cannot be made.
TRAIL = configured(
    lambda: build(Config.from_env(os.environ)),
    "audit-event",
    errors=(ConfigError, SecretMissing, ValueError, OSError),
)


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(TRAIL, Exception):
        return answer(500, f"audit-event is misconfigured: {TRAIL}")
    if event.method != "POST":
        reply = answer(405, f"{event.method} is not allowed: POST an AuditEvent")
        reply["headers"]["Allow"] = "POST"
        return reply
    try:
        status, text = TRAIL.receive(event.body, event.headers)
    except Rejected as exc:
        status, text = exc.status, exc.message
    return answer(status, text)
