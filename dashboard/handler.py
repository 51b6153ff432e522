"""dashboard: a signed-in user's functions and their organisations', as server-rendered HTML.

Users reach it at ``system.<domain>/dashboard/<rest>``: the router forwards that to
``/function/dashboard/<rest>`` once edge-auth has approved the session, and this function
receives the path ``/<rest>``. It checks the session itself as well, because the gateway
is reachable from the machine without the router.

Pages (GET and HEAD; plain HTML and one inline stylesheet, no JavaScript):

* ``/``: the user's functions and their organisations', grouped by owner, newest first:
  name, public URL, repository, commit, deploy time, last status, replicas, invocations.
* ``/<owner>``: one owner's group.
* ``/<owner>/<function>``: one function and its recent builds, each linking to its log.
* ``/<owner>/<function>/build/<sha>``: the build log of that commit, from pipeline-log.
* ``/<owner>/<function>/logs``: the function's last 200 runtime log lines, from the gateway.

Access: the ``openfaas_cloud_token`` cookie must hold a session token (``sdk.tokens``)
signed with the platform's key for this platform's issuer and audience; without one the
answer is 302 to edge-auth's ``/login?r=<this page's absolute URL>``. A page naming an
owner who is neither the user nor one of their organisations answers 404, exactly as a
function that does not exist does. A function belongs to the owner in its
``com.openfaas.cloud.git-owner`` label, compared whole and in any case (never by name
prefix: user ``al`` does not see ``alice``'s functions); platform functions
(``role: openfaas-system``) are never shown.

Environment, read once at start (a bad value makes every page a 500 naming it):

* ``public_domain`` (``localhost``), ``public_scheme`` (``http``), ``public_port``
  (``8000``, left out of URLs when it is the scheme's default): the token's issuer is
  ``<scheme>://auth.system.<domain>[:port]``, its audience and the dashboard's home
  ``<scheme>://system.<domain>[:port]``.
* ``dashboard_url`` (``<audience>/dashboard``): this dashboard's absolute URL; its path
  prefixes every link, and it is where edge-auth sends the user back to after sign-in.
* ``gateway_url`` (``http://127.0.0.1:8080``), ``pipeline_log_url``
  (``<gateway_url>/function/pipeline-log``), ``function_url_template`` (as buildshiprun's),
  ``secret_mount_path``.

Secrets: ``jwt-public-key`` (PEM), ``basic-auth-user`` and ``basic-auth-password`` (the
gateway API), ``payload-secret`` (signs reads from pipeline-log).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import jinja2
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from sdk.config import ConfigError, env_int, env_str
from sdk.function import configured
from sdk.gateway import GatewayClient, GatewayError
from sdk.logstore import LogKey, LogKeyError, builds_query
from sdk.openfaas import RecordError, is_platform_function, validate_name
from sdk.secrets import DEFAULT_MOUNT_PATH, SecretMissing, read_secret
from sdk.signing import CLOUD_SIGNATURE, sign
from sdk.tokens import (
    COOKIE_NAME,
    Identity,
    InvalidToken,
    load_public_key,
    token_audience,
    token_issuer,
    verify_token,
)
from sdk.urls import function_url, function_url_template

log = logging.getLogger("dashboard")

HERE = Path(__file__).resolve().parent
PREFIX = "com.openfaas.cloud."
OWNER_LABEL = PREFIX + "git-owner"
REPO_URL_ANNOTATION = PREFIX + "git-repo-url"
GATEWAY_TIMEOUT = 10.0
PIPELINE_LOG_TIMEOUT = 5.0
# The overview waits this long in all for the functions' build histories; a slow
# pipeline-log leaves the status at "deployed" rather than holding the page.
STATUS_BUDGET = 3.0
RUNTIME_LOG_LINES = 200
# A longer build log is shown by its end, where a build fails.
BUILD_LOG_LIMIT = 1_000_000
_SHA = re.compile(r"^[0-9a-f]{4,40}$")
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True)
class Config:
    """Settings from the environment; secrets are read by :func:`build`."""

    gateway_url: str
    pipeline_log_url: str
    secret_mount_path: str
    function_url_template: str
    issuer: str
    audience: str
    login_url: str
    dashboard_url: str

    @property
    def base_path(self) -> str:
        """The path every link starts with, e.g. ``/dashboard`` (no trailing slash)."""
        return urlsplit(self.dashboard_url).path.rstrip("/")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Config:
        scheme = env_str(env, "public_scheme", "http").lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"public_scheme={scheme!r}: expected http or https")
        domain = env_str(env, "public_domain", "localhost").lower()
        if not _DOMAIN.match(domain):
            raise ConfigError(f"public_domain={domain!r}: expected a DNS name such as example.com")
        port = env_int(env, "public_port", 8000, minimum=1, maximum=65535)
        system = token_audience(scheme, domain, port)
        auth = token_issuer(scheme, domain, port)
        gateway_url = env_str(env, "gateway_url", "http://127.0.0.1:8080").rstrip("/")
        cfg = cls(
            gateway_url=gateway_url,
            pipeline_log_url=env_str(
                env, "pipeline_log_url", gateway_url + "/function/pipeline-log"
            ).rstrip("/"),
            secret_mount_path=env_str(env, "secret_mount_path", DEFAULT_MOUNT_PATH),
            function_url_template=function_url_template(
                env_str(env, "function_url_template", ""), gateway_url
            ),
            issuer=auth,
            audience=system,
            login_url=auth + "/login",
            dashboard_url=env_str(env, "dashboard_url", system + "/dashboard").rstrip("/"),
        )
        for name in ("gateway_url", "pipeline_log_url", "dashboard_url"):
            parts = urlsplit(getattr(cfg, name))
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"{name}={getattr(cfg, name)!r}: expected an http(s) URL")
        return cfg


# -- what the pages show ------------------------------------------------------------------------
def _int(value: object) -> int:
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def format_time(unix: int) -> str:
    """``2026-11-21 09:00 UTC``, or ``unknown`` for 0.

    >>> format_time(1795251600), format_time(0)
    ('2026-11-21 09:00 UTC', 'unknown')
    """
    if unix <= 0:
        return "unknown"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def is_system(function: Mapping[str, Any]) -> bool:
    return is_platform_function(function.get("labels"))


def owner_of(function: Mapping[str, Any]) -> str:
    """The owner in the function's git-owner label, as the SCM spells it ("" when unlabelled)."""
    return str((function.get("labels") or {}).get(OWNER_LABEL, ""))


@dataclass(frozen=True)
class FunctionView:
    """One of a user's deployed functions, from the gateway's FunctionStatus."""

    name: str  # deployed name: alice-hello
    owner: str  # as the SCM spells it: Alice
    short_name: str  # the stack key: hello
    repo: str
    repo_url: str  # an http(s) link to the repository, or ""
    branch: str
    sha: str
    deploy_time: int
    private: bool
    replicas: int
    available_replicas: int
    invocations: int
    url: str
    status: str = "deployed"

    @property
    def owner_key(self) -> str:
        """The owner as it appears in dashboard paths: lower-case."""
        return self.owner.lower()

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    @property
    def deployed_at(self) -> str:
        return format_time(self.deploy_time)

    @classmethod
    def from_status(cls, function: Mapping[str, Any], url_template: str) -> FunctionView:
        labels = function.get("labels") or {}
        owner = owner_of(function)
        name = str(function.get("name", ""))
        prefix = owner.lower() + "-"
        short_name = name[len(prefix) :] if name.startswith(prefix) else name
        repo_url = str((function.get("annotations") or {}).get(REPO_URL_ANNOTATION, ""))
        if urlsplit(repo_url).scheme not in ("http", "https"):
            repo_url = ""  # never a javascript: or data: link
        return cls(
            name=name,
            owner=owner,
            short_name=short_name,
            repo=str(labels.get(PREFIX + "git-repo", "")),
            repo_url=repo_url,
            branch=str(labels.get(PREFIX + "git-branch", "")),
            sha=str(labels.get(PREFIX + "git-sha", "")),
            deploy_time=_int(labels.get(PREFIX + "git-deploytime")),
            private=str(labels.get(PREFIX + "git-private", "")).lower() in ("1", "true"),
            replicas=_int(function.get("replicas")),
            available_replicas=_int(function.get("availableReplicas")),
            invocations=_int(function.get("invocationCount")),
            url=function_url(url_template, name=name, owner=owner, short_name=short_name),
        )


@dataclass(frozen=True)
class Build:
    """One build of a function: its commit, when it was recorded, its last status."""

    sha: str
    time: int
    deployed: bool = False
    state: str = ""  # the pipeline's last status of it: pending, success, failure, error
    description: str = ""

    @property
    def outcome(self) -> str:
        """What happened to it, in words: ``built``, ``building``, ``failed: <why>``."""
        if self.state == "pending":
            return "building"
        if self.state in ("failure", "error"):
            why = self.description.removeprefix("build failed: ")  # the pipeline's own prefix
            return f"failed: {why}" if why else "failed"
        return "built" if self.state == "success" else ""

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    @property
    def built_at(self) -> str:
        return format_time(self.time)


@dataclass(frozen=True)
class OwnerGroup:
    owner: str  # display spelling
    key: str  # lower-case, as in paths
    is_org: bool
    functions: list[FunctionView]


def status_of(deployed_sha: str, builds: list[Build] | None) -> str:
    """``deployed``, unless pipeline-log knows a newer build that is not the deployed commit.

    >>> status_of("a" * 40, [Build("b" * 40, 2), Build("a" * 40, 1)])
    'newer build bbbbbbb not deployed'
    >>> status_of("a" * 40, [Build("b" * 40, 2, state="failure", description="tests failed")])
    'build bbbbbbb failed: tests failed'
    >>> status_of("a" * 40, [Build("b" * 40, 2, state="pending")])
    'build bbbbbbb building'
    >>> status_of("a" * 40, None)
    'deployed'
    """
    if builds and builds[0].sha != deployed_sha:
        newest = builds[0]
        if newest.state in ("pending", "failure", "error"):
            return f"build {newest.short_sha} {newest.outcome}"
        return f"newer build {newest.short_sha} not deployed"
    return "deployed"


def builds_with_deployed(deployed: FunctionView, builds: list[Build] | None) -> list[Build]:
    """The builds to list, newest first; the deployed commit is always among them."""
    listed = [replace(b, deployed=b.sha == deployed.sha) for b in builds or []]
    if deployed.sha and not any(b.deployed for b in listed):
        listed.append(Build(deployed.sha, deployed.deploy_time, deployed=True))
        listed.sort(key=lambda b: -b.time)
    return listed


# -- errors a page can end in -----------------------------------------------------------------------
class PageError(Exception):
    """A page that cannot be shown: ``status``, a title and a message for the user."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def not_found() -> PageError:
    # One answer for "does not exist" and "not yours": a page never tells them apart.
    return PageError(404, "Not found", "There is no such page, or it is not yours to see.")


def gateway_down(exc: GatewayError) -> PageError:
    log.error("gateway: %s", exc)
    return PageError(
        502,
        "The gateway is not answering",
        f"The dashboard could not read your functions from the OpenFaaS gateway ({exc.message}). "
        "Try again in a moment; if it persists, the platform's operator should check the gateway.",
    )


# -- pipeline-log -------------------------------------------------------------------------------
class BuildLogs:
    """Reads pipeline-log: one build log, and a function's builds where pipeline-log lists them.

    Every read is signed with the payload secret over its query string, as pipeline-log
    requires. Listing uses ``GET <url>/builds?owner=&repo=&function=`` answering
    ``{"builds": [{"sha": "<40 hex>", "time": <unix seconds>}, ...]}`` newest first; a
    pipeline-log without that endpoint (404) or any failure gives ``None``, and the
    dashboard then shows the deployed commit only.
    """

    def __init__(self, url: str, payload_secret: str, session: requests.Session) -> None:
        self.url = url
        self._secret = payload_secret
        self._session = session

    def _get(self, path: str, query: str) -> requests.Response:
        return self._session.get(
            f"{self.url}{path}?{query}",
            headers={CLOUD_SIGNATURE: sign(query.encode(), self._secret)},
            timeout=PIPELINE_LOG_TIMEOUT,
        )

    def read(self, key: LogKey) -> str | None:
        """The log under ``key``; ``None`` when there is none; :class:`PageError` 502 otherwise."""
        try:
            response = self._get("", key.query)
        except requests.RequestException as exc:
            log.error("pipeline-log unreachable: %s", type(exc).__name__)
            raise self._down("could not be reached") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.error("pipeline-log answered %d for %s", response.status_code, key.path)
            raise self._down(f"answered {response.status_code}")
        response.encoding = "utf-8"
        return response.text

    def builds(self, owner: str, repo: str, function: str) -> list[Build] | None:
        """The function's builds, newest first, or ``None`` when pipeline-log cannot say."""
        query = builds_query(owner, repo, function)
        try:
            response = self._get("/builds", query)
            if response.status_code != 200:
                if response.status_code != 404:
                    log.warning("pipeline-log builds answered %d", response.status_code)
                return None
            entries = response.json()["builds"]
            builds = [
                Build(
                    str(e["sha"]), _int(e.get("time")),
                    state=str(e.get("state") or ""), description=str(e.get("description") or ""),
                )  # fmt: skip
                for e in entries
                if isinstance(e, dict) and _SHA.match(str(e.get("sha", "")))
            ]
        except requests.RequestException as exc:
            log.warning("pipeline-log builds unreachable: %s", type(exc).__name__)
            return None
        except (ValueError, KeyError, TypeError):
            log.warning("pipeline-log builds answered something that is not a build list")
            return None
        builds.sort(key=lambda b: -b.time)
        return builds

    @staticmethod
    def _down(what: str) -> PageError:
        return PageError(
            502,
            "Build logs are unavailable",
            f"The platform's build log store (pipeline-log) {what}. Try again in a moment.",
        )


# -- rendering ----------------------------------------------------------------------------------
class Renderer:
    """Jinja templates with autoescaping, one stylesheet inlined and allowed by its hash."""

    def __init__(self, folder: Path) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(folder / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.css = (folder / "templates" / "dashboard.css").read_text()
        digest = base64.b64encode(hashlib.sha256(self.css.encode()).digest()).decode()
        # Only this stylesheet may apply: no other inline style, no script at all; the
        # empty data: icon keeps browsers from asking the gateway for /favicon.ico.
        policy = (
            f"default-src 'self'; style-src 'sha256-{digest}'; script-src 'none'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        self.headers = {
            "Content-Security-Policy": policy,
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            # Every page is one user's private view, logs included: keep none of them.
            "Cache-Control": "no-store",
        }

    def page(self, status: int, template: str, **context: Any) -> dict[str, Any]:
        body = self.env.get_template(template).render(css=self.css, **context)
        headers = {**self.headers, "Content-Type": "text/html; charset=utf-8"}
        return {"statusCode": status, "body": body, "headers": headers}


# -- the typed core -------------------------------------------------------------------------------
def session_tokens(cookie_header: str) -> list[str]:
    """Every ``openfaas_cloud_token`` value in a Cookie header, in order.

    A browser may send the cookie twice (one set for the domain, one for the host); each
    is tried. Other cookies are ignored whatever their syntax.

    >>> session_tokens("a=1; openfaas_cloud_token=x.y.z; b=2")
    ['x.y.z']
    """
    tokens = []
    for part in cookie_header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE_NAME and value:
            tokens.append(value.strip().strip('"'))
    return tokens


class Dashboard:
    """A request in, a page out: the session check, the owner check, then one page."""

    def __init__(
        self,
        cfg: Config,
        gateway: GatewayClient,
        build_logs: BuildLogs,
        public_key: ec.EllipticCurvePublicKey,
        renderer: Renderer,
    ) -> None:
        self.cfg = cfg
        self.gateway = gateway
        self.build_logs = build_logs
        self.public_key = public_key
        self.renderer = renderer

    # -- access ------------------------------------------------------------------------------------
    def identity(self, headers: Any) -> Identity | None:
        """The user of a valid session cookie, or ``None``."""
        reason = "no session cookie"
        for token in session_tokens(headers.get("Cookie", "")):
            try:
                return verify_token(
                    token, self.public_key, issuer=self.cfg.issuer, audience=self.cfg.audience
                )
            except InvalidToken as exc:
                reason = str(exc)  # PyJWT's reason; never the token
        log.info("no valid session (%s): sending to sign-in", reason)
        return None

    def page_url(self, event: Any) -> str:
        """This page's absolute public URL: where sign-in should return the user to."""
        # event.path arrives percent-decoded; quote it again for the URL.
        url = self.cfg.dashboard_url + quote(event.path or "/")
        query = urlencode(list(event.query.items(multi=True))) if event.query else ""
        return f"{url}?{query}" if query else url

    def sign_in(self, event: Any) -> dict[str, Any]:
        location = f"{self.cfg.login_url}?{urlencode({'r': self.page_url(event)})}"
        reply = self.renderer.page(
            302, "signin.html", identity=None, location=location, base=self.cfg.base_path
        )
        reply["headers"]["Location"] = location
        return reply

    # -- pages -------------------------------------------------------------------------------------
    def handle(self, event: Any) -> dict[str, Any]:
        if event.method not in ("GET", "HEAD"):
            reply = self.error(
                None, PageError(405, "Not allowed", "The dashboard only shows pages.")
            )
            reply["headers"]["Allow"] = "GET, HEAD"
            return reply
        identity = self.identity(event.headers)
        if identity is None:
            return self.sign_in(event)
        try:
            path = event.path.strip("/")
            return self.route(identity, path.split("/") if path else [])
        except PageError as exc:
            return self.error(identity, exc)

    def route(self, identity: Identity, parts: list[str]) -> dict[str, Any]:
        if not parts:
            return self.overview(identity, None)
        if len(parts) == 1:
            return self.overview(identity, parts[0])
        if len(parts) == 2:
            return self.function_page(identity, parts[0], parts[1])
        if len(parts) == 3 and parts[2] == "logs":
            return self.runtime_logs(identity, parts[0], parts[1])
        if len(parts) == 4 and parts[2] == "build":
            return self.build_log(identity, parts[0], parts[1], parts[3])
        raise not_found()

    def render(
        self, status: int, template: str, identity: Identity, **context: Any
    ) -> dict[str, Any]:
        return self.renderer.page(
            status, template, identity=identity, base=self.cfg.base_path, **context
        )

    def error(self, identity: Identity | None, exc: PageError) -> dict[str, Any]:
        return self.renderer.page(
            exc.status, "error.html", identity=identity, base=self.cfg.base_path, error=exc
        )

    def overview(self, identity: Identity, only: str | None) -> dict[str, Any]:
        owners = identity.owners()
        if only is not None and only.lower() not in owners:
            raise not_found()
        try:
            listed = self.gateway.list_functions()
        except GatewayError as exc:
            raise gateway_down(exc) from None
        wanted = {only.lower()} if only is not None else owners
        functions = [
            FunctionView.from_status(f, self.cfg.function_url_template)
            for f in listed
            if not is_system(f) and owner_of(f).lower() in wanted
        ]
        functions = self.with_statuses(functions)
        groups = self.group(identity, wanted, functions)
        title = groups[0].owner if only is not None else "Your functions"
        return self.render(200, "overview.html", identity, groups=groups, title=title)

    def group(
        self, identity: Identity, wanted: Iterable[str], functions: list[FunctionView]
    ) -> list[OwnerGroup]:
        spelled = {o.lower(): o for o in (*identity.orgs, identity.login)}  # as GitHub does
        login = identity.login.lower()
        keys = sorted(wanted, key=lambda k: (k != login, k))
        return [
            OwnerGroup(
                owner=spelled.get(key, key),
                key=key,
                is_org=key != login,
                functions=sorted(
                    (f for f in functions if f.owner_key == key),
                    key=lambda f: (-f.deploy_time, f.name),
                ),
            )
            for key in keys
        ]

    def with_statuses(self, functions: list[FunctionView]) -> list[FunctionView]:
        """Each function with its last status from pipeline-log, asked at once, within a budget."""
        if not functions:
            return functions
        pool = ThreadPoolExecutor(max_workers=min(4, len(functions)))
        futures = [
            pool.submit(self.build_logs.builds, f.owner, f.repo, f.short_name) for f in functions
        ]
        done, _ = wait_all(futures, timeout=STATUS_BUDGET)
        # Reads still running end on their own timeout in the background and queued ones
        # are dropped: their functions stay "deployed" rather than holding the page.
        pool.shutdown(wait=False, cancel_futures=True)
        return [
            replace(f, status=status_of(f.sha, future.result() if future in done else None))
            for f, future in zip(functions, futures, strict=True)
        ]

    def find(self, identity: Identity, owner: str, short_name: str) -> FunctionView:
        """The function ``short_name`` of ``owner``, if the user may see it; else 404."""
        if owner.lower() not in identity.owners():
            raise not_found()
        try:
            name = validate_name("function", f"{owner.lower()}-{short_name}")
        except RecordError:
            raise not_found() from None
        try:
            status = self.gateway.get_function(name)
        except GatewayError as exc:
            raise gateway_down(exc) from None
        # alice/b-x and alice-b/x both name alice-b-x: the label says whose it is.
        if status is None or is_system(status) or owner_of(status).lower() != owner.lower():
            raise not_found()
        return FunctionView.from_status(status, self.cfg.function_url_template)

    def function_page(self, identity: Identity, owner: str, short_name: str) -> dict[str, Any]:
        fn = self.find(identity, owner, short_name)
        builds = self.build_logs.builds(fn.owner, fn.repo, fn.short_name)
        fn = replace(fn, status=status_of(fn.sha, builds))
        listed = builds_with_deployed(fn, builds)
        return self.render(200, "function.html", identity, fn=fn, builds=listed)

    def build_log(
        self, identity: Identity, owner: str, short_name: str, sha: str
    ) -> dict[str, Any]:
        if not _SHA.match(sha):
            raise not_found()
        fn = self.find(identity, owner, short_name)
        try:
            key = LogKey(fn.owner, fn.repo, sha, fn.short_name)
        except LogKeyError:
            raise not_found() from None
        text = self.build_logs.read(key)
        if text is None:
            raise PageError(
                404,
                "No build log",
                f"There is no build log of {fn.short_name} for commit {sha[:7]}: "
                "it was never built, or its log has expired.",
            )
        shown, cut = text, 0
        if len(text) > BUILD_LOG_LIMIT:
            shown = text[-BUILD_LOG_LIMIT:]
            shown = shown[shown.find("\n") + 1 :] if "\n" in shown[:1000] else shown
            cut = len(text) - len(shown)
        return self.render(
            200, "build.html", identity, fn=fn, sha=sha, log=shown, cut=cut, total=len(text)
        )

    def runtime_logs(self, identity: Identity, owner: str, short_name: str) -> dict[str, Any]:
        fn = self.find(identity, owner, short_name)
        try:
            records = list(self.gateway.logs(fn.name, tail=RUNTIME_LOG_LINES))
        except GatewayError as exc:
            if exc.status == 404:
                raise not_found() from None
            raise gateway_down(exc) from None
        lines = [
            (str(r.get("timestamp", "")), str(r.get("instance", "")), str(r.get("text", "")))
            for r in records
        ]
        return self.render(200, "logs.html", identity, fn=fn, lines=lines, limit=RUNTIME_LOG_LINES)


def build(cfg: Config) -> Dashboard:
    """The dashboard with its clients; SecretMissing names a secret that is not mounted."""
    session = requests.Session()
    gateway = GatewayClient(
        cfg.gateway_url,
        read_secret("basic-auth-user", cfg.secret_mount_path),
        read_secret("basic-auth-password", cfg.secret_mount_path),
        timeout=GATEWAY_TIMEOUT,
        session=session,
    )
    build_logs = BuildLogs(
        cfg.pipeline_log_url, read_secret("payload-secret", cfg.secret_mount_path), session
    )
    # Parsed once (it costs more than checking a signature); a key that cannot verify
    # anything would send every user back to sign-in for ever.
    try:
        public_key = load_public_key(
            read_secret("jwt-public-key", cfg.secret_mount_path).encode()
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"secret 'jwt-public-key' is not an EC public key in PEM ({exc})"
        ) from None
    return Dashboard(cfg, gateway, build_logs, public_key, Renderer(HERE))


# Startup errors: a bad setting, or a secret that is not mounted.
DASHBOARD = configured(
    lambda: build(Config.from_env(os.environ)),
    "dashboard",
    errors=(ConfigError, SecretMissing, ValueError, OSError),
)


def handle(event: Any, context: Any) -> dict[str, Any]:
    if isinstance(DASHBOARD, Exception):
        return {
            "statusCode": 500,
            "body": f"dashboard is misconfigured: {DASHBOARD}\n",
            "headers": {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"},
        }
    return DASHBOARD.handle(event)
