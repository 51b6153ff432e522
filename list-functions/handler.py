"""list-functions: one owner's functions, newest deploy first, for the dashboard.

* ``GET /?user=<owner>``, ``X-Cloud-Signature`` over the canonical query ``user=<owner>``
  (URL-encoded, as ``urllib.parse.urlencode({"user": owner})`` gives it);
* ``POST /`` with ``{"user": "<owner>"}``, signed over the body.

Answers 200 with a JSON list, one object per function whose
``com.openfaas.cloud.git-owner`` label equals the owner in any case, sorted by
``deploy_time``, newest first: ``name``, ``short_name`` (the stack key: ``name`` without
``lower(owner)-``), ``repo``, ``sha``, ``branch``, ``deploy_time`` (Unix seconds),
``private``, ``replicas``, ``available_replicas``, ``invocations``, ``image`` (without its
registry host) and ``url``. Functions labelled ``role: openfaas-system`` are never listed.
401 for a bad signature, 400 without a user, 502 when the gateway cannot list.

Environment, read once at start: ``gateway_url`` (``http://127.0.0.1:8080``),
``function_url_template`` (default ``<gateway_url>/function/{name}``; placeholders
``{name}``, ``{short_name}`` and ``{owner}``, the owner lower-cased, e.g.
``https://{owner}.example.com/{short_name}``), ``secret_mount_path``. Secrets:
``payload-secret``, ``basic-auth-user``, ``basic-auth-password``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sdk.config import ConfigError, env_str
from sdk.function import (
    Rejected,
    answer,
    check_cloud_signature,
    configured,
    json_answer,
    parse_json,
)
from sdk.gateway import GatewayClient, GatewayError
from sdk.openfaas import is_platform_function
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret
from sdk.urls import function_url, function_url_template

log = logging.getLogger("list-functions")

PREFIX = "com.openfaas.cloud."
OWNER_LABEL = PREFIX + "git-owner"
GATEWAY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Config:
    gateway_url: str
    secret_mount_path: str
    function_url_template: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        gateway_url = env_str(env, "gateway_url", "http://127.0.0.1:8080")
        template = function_url_template(env_str(env, "function_url_template", ""), gateway_url)
        return cls(
            gateway_url=gateway_url,
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            function_url_template=template,
        )


def is_system(function: Mapping[str, Any]) -> bool:
    return is_platform_function(function.get("labels"))


def owned_by(function: Mapping[str, Any], owner: str) -> bool:
    """True when ``function``'s git-owner label is ``owner`` in any case (never for "")."""
    label = (function.get("labels") or {}).get(OWNER_LABEL, "")
    return bool(owner) and label.lower() == owner.lower()


def public_image(image: str) -> str:
    """``image`` without its registry host, which users need not see.

    The first path part is a host when it has a '.' or ':' or is ``localhost`` (Docker's
    rule), so ``alexellis/fn:1`` is kept whole where the original cut it to ``fn:1``.

    >>> public_image("registry.example.com:5000/alexellis/fn:latest-main-04b8e44")
    'alexellis/fn:latest-main-04b8e44'
    >>> public_image("alexellis/fn:1")
    'alexellis/fn:1'
    """
    first, sep, rest = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return image


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0


def summarise(function: Mapping[str, Any], owner: str, url_template: str) -> dict[str, Any]:
    """What the dashboard shows of one of ``owner``'s functions (gateway FunctionStatus in)."""
    labels = function.get("labels") or {}
    name = str(function.get("name", ""))
    prefix = owner.lower() + "-"
    short_name = name[len(prefix) :] if name.startswith(prefix) else name
    return {
        "name": name,
        "short_name": short_name,
        "repo": labels.get(PREFIX + "git-repo", ""),
        "sha": labels.get(PREFIX + "git-sha", ""),
        "branch": labels.get(PREFIX + "git-branch", ""),
        "deploy_time": _int(labels.get(PREFIX + "git-deploytime")),
        "private": labels.get(PREFIX + "git-private", "").lower() in ("1", "true"),
        "replicas": _int(function.get("replicas")),
        "available_replicas": _int(function.get("availableReplicas")),
        "invocations": _int(function.get("invocationCount")),
        "image": public_image(str(function.get("image", ""))),
        "url": function_url(url_template, name=name, short_name=short_name, owner=owner),
    }


class Lister:
    """The typed core: a signed request for one owner in, their functions out."""

    def __init__(self, cfg: Config, gateway: GatewayClient, payload_secret: str) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.payload_secret = payload_secret

    def user_of(self, event: Any) -> str:
        """The owner asked for, after the signature check; Rejected 401/400/405."""
        if event.method in ("GET", "HEAD"):
            user = event.query.get("user", "")
            signed = urlencode([("user", user)]).encode()
            check_cloud_signature(signed, event.headers, self.payload_secret)
        elif event.method == "POST":
            check_cloud_signature(event.body, event.headers, self.payload_secret)
            body = parse_json(event.body)
            user = body.get("user", "") if isinstance(body, dict) else ""
            if not isinstance(user, str):
                raise Rejected(400, "user must be a string")
        else:
            raise Rejected(405, f"{event.method} is not allowed: use GET ?user= or POST")
        if not user.strip():
            raise Rejected(400, 'user is required: GET ?user=<owner> or POST {"user": "<owner>"}')
        return user.strip()

    def list(self, owner: str) -> list[dict[str, Any]]:
        try:
            functions = self.gateway.list_functions()
        except GatewayError as exc:
            log.error("cannot list functions: %s", exc)
            raise Rejected(502, f"cannot list functions: {exc.message}") from None
        mine = [
            summarise(f, owner, self.cfg.function_url_template)
            for f in functions
            if owned_by(f, owner) and not is_system(f)
        ]
        mine.sort(key=lambda f: (-f["deploy_time"], f["name"]))
        log.info("listed %d functions of %s", len(mine), owner)
        return mine


def build(cfg: Config) -> Lister:
    gateway = GatewayClient(
        cfg.gateway_url,
        read_secret("basic-auth-user", cfg.secret_mount_path),
        read_secret("basic-auth-password", cfg.secret_mount_path),
        timeout=GATEWAY_TIMEOUT,
    )
    return Lister(cfg, gateway, read_secret("payload-secret", cfg.secret_mount_path))


# Startup errors: a bad setting, a secret that is not mounted, a storage root that cannot be made.
LISTER = configured(
    lambda: build(Config.from_env(os.environ)),
    "list-functions",
    errors=(ConfigError, SecretMissing, ValueError, OSError),
)


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(LISTER, Exception):
        return answer(500, f"list-functions is misconfigured: {LISTER}")
    try:
        return json_answer(200, LISTER.list(LISTER.user_of(event)))
    except Rejected as exc:
        reply = answer(exc.status, exc.message)
        if exc.status == 405:
            reply["headers"]["Allow"] = "GET, HEAD, POST"
        return reply
