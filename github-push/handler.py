"""github-push: decide whether a push is built, say so on the commit, queue git-tar.

Only pushes to the build branch are built: ``build_branch`` when set, else the
repository's default branch as GitHub reports it. A build starts with a ``pending``
status on the ``stack-deploy`` context; git-tar does the long work asynchronously.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdk.config import ConfigError, env_bool, env_str
from sdk.events import STACK_CONTEXT, CommitStatus, PushEvent
from sdk.function import Rejected, answer, configured, read_signed
from sdk.gateway import GatewayClient, GatewayError
from sdk.secrets import DEFAULT_MOUNT_PATH
from sdk.signing import CLOUD_SIGNATURE, sign
from sdk.status import StatusReporter

log = logging.getLogger("github-push")


@dataclass(frozen=True)
class Config:
    gateway_url: str
    secret_mount_path: str
    build_branch: str
    report_status: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            gateway_url=env_str(env, "gateway_url", "http://127.0.0.1:8080"),
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            build_branch=env_str(env, "build_branch", ""),
            report_status=env_bool(env, "report_status", True),
        )


def build_branch_for(push: PushEvent, configured: str) -> str:
    """The branch that is built: the configured one, else the repository's default."""
    return configured or push.default_branch


class Pusher:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.gateway = GatewayClient(cfg.gateway_url, timeout=8.0)

    @staticmethod
    def call_headers(body: bytes, secret: str, push: PushEvent) -> dict[str, str]:
        headers = {CLOUD_SIGNATURE: sign(body, secret)}
        if push.delivery_id:  # the queue refuses a second call with the same id
            headers["X-Call-Id"] = f"git-tar-{push.delivery_id}"
        return headers

    def receive(self, body: bytes, headers: Any) -> tuple[int, str]:
        push, secret = read_signed(body, headers, PushEvent, self.cfg.secret_mount_path)
        branch = build_branch_for(push, self.cfg.build_branch)
        if push.branch != branch:
            return 202, f"ignored: {push.branch} is not the build branch ({branch})"
        StatusReporter(self.gateway, secret, enabled=self.cfg.report_status).report(
            CommitStatus(
                owner=push.owner,
                repo=push.repo,
                sha=push.sha,
                installation_id=push.installation_id,
                context=STACK_CONTEXT,
                state="pending",
                description=f"{push.owner.lower()}/{push.repo}: building stack.yml",
            )
        )
        try:
            self.gateway.invoke_async(
                "git-tar",
                body,
                headers=self.call_headers(body, secret, push),
            )
        except GatewayError as exc:
            log.error("cannot queue git-tar for %s@%s: %s", push.full_name, push.sha[:12], exc)
            raise Rejected(502, f"cannot queue git-tar: {exc.message}") from None
        log.info("building %s@%s on %s", push.full_name, push.sha[:12], branch)
        return 202, f"building {push.full_name}@{push.sha[:12]}"


PUSHER = configured(lambda: Pusher(Config.from_env(os.environ)), "github-push")


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(PUSHER, ConfigError):
        return answer(500, f"github-push is misconfigured: {PUSHER}")
    try:
        status, text = PUSHER.receive(event.body, event.headers)
    except Rejected as exc:
        status, text = exc.status, exc.message
    return answer(status, text)
