"""buildshiprun: build one function, store its log, deploy it, report the outcome.

The deployed name is ``lower(owner)-<function>``, refused when another owner already
has a function of that name. The platform sets the ``com.openfaas.cloud.*`` labels;
a user's labels may not touch reserved keys, their annotations pass an allow-list, and
their secret names are prefixed with ``lower(owner)-``. ``success`` is reported only
once the new version serves and answers its health check, with its public URL.

A failed build or deploy is the user's outcome, not a platform fault: the answer is
200 with ``{"status": "failure", "reason": ...}`` and a ``failure`` status on the commit.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from sdk.config import ConfigError, env_bool, env_duration, env_int, env_str
from sdk.events import BuildRequest, BuildResult, CommitStatus, PipelineLog, PushEvent, RecordError
from sdk.function import Rejected, configured, json_answer, read_signed
from sdk.gateway import GatewayClient, GatewayError
from sdk.openfaas import FunctionDeployment, Resources, validate_name
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret
from sdk.signing import BUILD_SIGNATURE, CLOUD_SIGNATURE, sign
from sdk.status import StatusReporter
from sdk.urls import function_url, function_url_template

log = logging.getLogger("buildshiprun")

PREFIX = "com.openfaas.cloud."
# Waits between tries while every build slot of the builder is busy (429).
BUSY_FIRST_WAIT = 0.1
BUSY_MAX_WAIT = 2.0
RESERVED_LABELS = ("role", "openfaas-cloud", "faas_function", "app")
# Secrets of the platform itself; a user's prefixed secret name must never be one of them
# (owner "payload" + secret "secret" would otherwise mount the payload secret).
PLATFORM_SECRETS = frozenset(
    {
        "payload-secret",
        "github-webhook-secret",
        "basic-auth-user",
        "basic-auth-password",
        "private-key",
        "s3-access-key",
        "s3-secret-key",
        "customers",
        "jwt-private-key",
        "jwt-public-key",
        "oauth-client-secret",
    }
)
ALLOWED_ANNOTATIONS = (
    "topic",
    "schedule",
    "com.openfaas.health.http.path",
    "com.openfaas.health.http.initialDelay",
)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class Failed(Exception):
    """The function was not deployed; the message goes on the commit."""


@dataclass(frozen=True)
class Config:
    gateway_url: str
    secret_mount_path: str
    builder_url: str
    function_url_template: str
    log_url_template: str
    report_status: bool
    readonly_root_filesystem: bool
    memory_limit: str
    cpu_limit: str
    cpu_request: str
    scaling_min: int
    scaling_max: int
    ready_timeout: float
    build_timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        return cls(
            gateway_url=env_str(env, "gateway_url", "http://127.0.0.1:8080"),
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            builder_url=env_str(env, "builder_url", "http://127.0.0.1:8081").rstrip("/"),
            function_url_template=function_url_template(
                env_str(env, "function_url_template", ""),
                env_str(env, "gateway_url", "http://127.0.0.1:8080"),
            ),
            log_url_template=env_str(env, "log_url_template", ""),
            report_status=env_bool(env, "report_status", True),
            readonly_root_filesystem=env_bool(env, "readonly_root_filesystem", True),
            memory_limit=env_str(env, "function_memory_limit", "128Mi"),
            cpu_limit=env_str(env, "function_cpu_limit", ""),
            cpu_request=env_str(env, "function_cpu_request", ""),
            scaling_min=env_int(env, "scaling_min_limit", 1, minimum=0),
            scaling_max=env_int(env, "scaling_max_limit", 4, minimum=1),
            ready_timeout=env_duration(env, "ready_timeout", 120.0),
            build_timeout=env_duration(env, "build_timeout", 600.0),
        )


def function_name(owner: str, function: str) -> str:
    """``lower(owner)-<function>``, a valid DNS label or :class:`Failed`."""
    name = f"{owner.lower()}-{function}"
    try:
        return validate_name("function name", name)
    except RecordError as exc:
        raise Failed(f"functions.{function}: {exc}") from None


def deployment_for(
    req: BuildRequest, push: PushEvent, image: str, cfg: Config, now: float
) -> FunctionDeployment:
    """The gateway deployment: platform labels win, user input filtered."""
    owner = push.owner.lower()
    labels = {
        k: v for k, v in req.labels.items() if not k.startswith(PREFIX) and k not in RESERVED_LABELS
    }
    labels.update(
        {
            "com.openfaas.scale.min": str(cfg.scaling_min),
            "com.openfaas.scale.max": str(cfg.scaling_max),
            f"{PREFIX}git-owner": push.owner,
            f"{PREFIX}git-owner-id": str(push.owner_id),
            f"{PREFIX}git-repo": push.repo,
            f"{PREFIX}git-sha": push.sha,
            f"{PREFIX}git-branch": push.branch,
            f"{PREFIX}git-deploytime": str(int(now)),
            f"{PREFIX}git-private": "1" if push.private else "0",
            f"{PREFIX}git-scm": push.scm,
            f"{PREFIX}context-digest": req.context_digest,
        }
    )
    secrets = [f"{owner}-{s}" for s in req.secrets]
    for secret in secrets:
        if secret in PLATFORM_SECRETS:
            raise Failed(
                f"functions.{req.function}.secrets: {secret!r} is reserved by the platform"
            )
    annotations = {k: v for k, v in req.annotations.items() if k in ALLOWED_ANNOTATIONS}
    annotations[f"{PREFIX}git-repo-url"] = push.html_url
    return FunctionDeployment(
        service=function_name(push.owner, req.function),
        image=image,
        env_vars=dict(req.environment),
        secrets=secrets,
        labels=labels,
        annotations=annotations,
        limits=Resources(memory=cfg.memory_limit, cpu=cfg.cpu_limit),
        requests=Resources(cpu=cfg.cpu_request) if cfg.cpu_request else None,
        read_only_root_filesystem=cfg.readonly_root_filesystem,
    )


class BuildShipRun:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.session = requests.Session()

    def secret(self, name: str) -> str:
        try:
            return read_secret(name, self.cfg.secret_mount_path)
        except SecretMissing as exc:
            raise Failed(f"the platform is misconfigured: {exc}") from None

    def gateway(self) -> GatewayClient:
        return GatewayClient(
            self.cfg.gateway_url,
            self.secret("basic-auth-user"),
            self.secret("basic-auth-password"),
            timeout=30.0,
            session=self.session,
        )

    def run(self, req: BuildRequest, secret: str) -> dict[str, Any]:
        push = req.push_event
        gateway = self.gateway()
        reporter = StatusReporter(gateway, secret, enabled=self.cfg.report_status)
        name = f"{push.owner.lower()}-{req.function}"

        def status(state: str, description: str, url: str = "") -> None:
            reporter.report(
                CommitStatus(
                    owner=push.owner,
                    repo=push.repo,
                    sha=push.sha,
                    installation_id=push.installation_id,
                    context=req.function,
                    state=state,
                    description=description,
                    target_url=url,
                    log_url=self.log_url(push, req.function),
                )
            )

        try:
            name = function_name(push.owner, req.function)
            self.check_owner(gateway, name, push)
            status("pending", f"building {req.function}")
            image = req.image if req.skip_build else self.build(req, push, secret)
            deployment = deployment_for(req, push, image, self.cfg, time.time())
            try:
                gateway.deploy(deployment)
            except GatewayError as exc:
                raise Failed(f"deploy of {name} refused: {exc.message}") from None
            self.wait_serving(gateway, name, push.sha)
        except Failed as exc:
            log.warning("%s@%s %s: %s", push.full_name, push.sha[:12], req.function, exc)
            status("failure", str(exc))
            return {"status": "failure", "function": req.function, "reason": str(exc)}
        url = function_url(
            self.cfg.function_url_template, name=name, owner=push.owner, short_name=req.function
        )
        status("success", f"deployed {name}", url)
        log.info("%s@%s %s: deployed %s", push.full_name, push.sha[:12], req.function, image)
        return {
            "status": "success",
            "function": req.function,
            "name": name,
            "image": image,
            "url": url,
        }

    def check_owner(self, gateway: GatewayClient, name: str, push: PushEvent) -> None:
        """Never overwrite another owner's function (``a``+``b-c`` and ``a-b``+``c`` collide)."""
        try:
            existing = gateway.get_function(name)
        except GatewayError as exc:
            raise Failed(f"cannot check {name}: {exc.message}") from None
        if existing is None:
            return
        owner = (existing.get("labels") or {}).get(f"{PREFIX}git-owner", "")
        if owner.lower() != push.owner.lower():
            raise Failed(
                f"the name {name} is taken by another account's function; rename the function"
            )

    def build(self, req: BuildRequest, push: PushEvent, secret: str) -> str:
        try:
            tar = base64.b64decode(req.tar, validate=True)
        except (binascii.Error, ValueError):
            raise Failed("the build context is not valid base64") from None
        response = self.post_build(tar, secret)
        try:
            result = BuildResult.from_json(response.json())
        except (ValueError, RecordError):
            self.store_log(
                push,
                req.function,
                f"builder answered {response.status_code}: {response.text[:2000]}",
                secret,
            )
            raise Failed(
                f"the builder answered {response.status_code} without a build result"
            ) from None
        self.store_log(push, req.function, "\n".join(result.log), secret)
        if result.status != "success" or response.status_code != 200:
            tail = next(
                (line for line in reversed(result.log) if line.strip()), "see the build log"
            )
            raise Failed(tail[:200] if tail.startswith("build failed") else f"build failed: {tail[:200]}")
        return result.image

    def post_build(self, tar: bytes, secret: str) -> requests.Response:
        """POST the tar to the builder, waiting for a free build slot while it answers 429.

        The builder refuses builds beyond its concurrency limit rather than queueing them;
        many pushes at once (ten users, or one stack of ten functions) must wait their
        turn, not fail. Waits back off from BUSY_FIRST_WAIT to BUSY_MAX_WAIT (at most the
        builder's Retry-After), all within ``build_timeout``.
        """
        headers = {BUILD_SIGNATURE: sign(tar, secret), "Content-Type": "application/octet-stream"}
        deadline = time.monotonic() + self.cfg.build_timeout
        wait = BUSY_FIRST_WAIT
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = self.session.post(
                    f"{self.cfg.builder_url}/build", data=tar, headers=headers,
                    timeout=max(remaining, 1.0),
                )  # fmt: skip
            except requests.RequestException as exc:
                raise Failed(f"the builder could not be reached: {type(exc).__name__}") from None
            if response.status_code != 429:
                return response
            wait = min(wait * 2, BUSY_MAX_WAIT, _retry_after(response) or BUSY_MAX_WAIT)
            if time.monotonic() + wait > deadline:
                raise Failed(
                    f"every build slot stayed busy for {self.cfg.build_timeout:g} s; push again later"
                )
            log.info("builder busy (429); trying again in %.2f s", wait)
            time.sleep(wait * random.uniform(0.75, 1.25))  # jitter: waiters do not retry in step

    def store_log(self, push: PushEvent, function: str, text: str, secret: str) -> None:
        record = PipelineLog(
            owner=push.owner, repo=push.repo, sha=push.sha, function=function, data=text
        )
        body = json.dumps(record.to_json()).encode()
        try:
            response = GatewayClient(self.cfg.gateway_url, session=self.session).invoke(
                "pipeline-log", body, headers={CLOUD_SIGNATURE: sign(body, secret)}
            )
            if response.status_code != 200:
                log.warning("pipeline-log answered %d", response.status_code)
        except GatewayError as exc:
            log.warning("cannot store the build log: %s", exc)

    def log_url(self, push: PushEvent, function: str) -> str:
        if not self.cfg.log_url_template:
            return ""
        return self.cfg.log_url_template.format(
            owner=push.owner, repo=push.repo, sha=push.sha, function=function
        )

    def wait_serving(self, gateway: GatewayClient, name: str, sha: str) -> None:
        """Until the gateway routes to the version built from ``sha`` and it answers health."""
        deadline = time.monotonic() + self.cfg.ready_timeout
        while time.monotonic() < deadline:
            try:
                status = gateway.get_function(name) or {}
                if (status.get("labels") or {}).get(f"{PREFIX}git-sha") == sha and status.get(
                    "availableReplicas", 0
                ) >= 1:
                    if (
                        gateway.invoke(name, method="GET", path="/_/health", timeout=5).status_code
                        == 200
                    ):
                        return
            except GatewayError:
                pass
            time.sleep(0.2)
        raise Failed(f"{name} did not start within {self.cfg.ready_timeout:g} s; see its logs")


BUILD_SHIP_RUN = configured(lambda: BuildShipRun(Config.from_env(os.environ)), "buildshiprun")


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(BUILD_SHIP_RUN, ConfigError):
        reason = f"buildshiprun is misconfigured: {BUILD_SHIP_RUN}"
        return json_answer(500, {"status": "failure", "reason": reason})
    try:
        request, secret = read_signed(
            event.body, event.headers, BuildRequest, BUILD_SHIP_RUN.cfg.secret_mount_path
        )
    except Rejected as exc:
        return json_answer(exc.status, {"status": "failure", "reason": exc.message})
    return json_answer(200, BUILD_SHIP_RUN.run(request, secret))
