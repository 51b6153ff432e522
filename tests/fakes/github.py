"""A fake GitHub for tests: the REST calls the platform makes, and webhook deliveries.

The REST fake listens on 127.0.0.1 and checks every request against GitHub's own OpenAPI
description (``shared/specs/github-rest-subset.json``): the path and method must exist,
the query parameters and the JSON body must match the operation's schemas. A request that
does not is answered 422 (404 for an unknown route) and noted in :attr:`FakeGitHub.violations`,
so a test can assert the code under test only ever spoke GitHub. Responses are GitHub's own
examples from the same document with our values filled in.

It plays a GitHub App with a freshly generated RSA key: ``POST
/app/installations/{id}/access_tokens`` needs a Bearer JWT that key signed (RS256,
``iss`` = :attr:`FakeGitHub.app_id`, ``exp`` at most 10 minutes ahead), and repository
calls need a token it minted. Every request is recorded (:attr:`FakeGitHub.requests`,
``Authorization`` left out), and :meth:`FakeGitHub.fail_next` makes the next calls fail
with a 5xx or a rate limit to exercise retries.

Use the fixture by importing it into a test module; pytest registers it under its own
name, ``fake_github``, whatever the import calls it, and an alias keeps ruff from taking
each test's ``fake_github`` parameter for a redefinition (F811)::

    from tests.fakes.github import (
        fake_github as _fake_github,  # noqa: F401  (registers the fake_github fixture)
    )

It also plays GitHub's OAuth web flow for one or more OAuth apps (:meth:`FakeGitHub.add_oauth_app`)
and one browser whose GitHub session is :meth:`FakeGitHub.sign_in`'s user: ``GET
/login/oauth/authorize`` checks the client id and the redirect URI (GitHub's rules: same
host or a subdomain, same port, a path under the callback URL's) and redirects straight
back with a one-time code and the same ``state``; ``POST /login/oauth/access_token`` checks
the client credentials, the code (single use, 10 minutes) and the redirect URI, and answers
an access token (JSON with ``Accept: application/json``, form-encoded otherwise; a refused
exchange is 200 with ``error``, as GitHub does) that ``GET /user`` and ``GET /user/orgs``
then accept. Every token it hands out is in :attr:`FakeGitHub.oauth_tokens`; the recorded
form of an exchange has ``client_secret`` masked.

Webhooks: :func:`webhook_delivery` signs a payload the way GitHub does, the ``*_payload``
builders make payloads that pass :func:`validate_webhook` against
``shared/specs/github-webhooks-subset.json``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.wrappers import Request, Response

from gitserver.events import REPOSITORY_URL_FIELDS
from sdk.signing import sign
from tests.helpers import LoopbackWsgi

__all__ = [
    "SPECS",
    "SPECS_MISSING",
    "FakeGitHub",
    "OAuthApp",
    "Recorded",
    "fake_github",
    "installation_payload",
    "installation_repositories_payload",
    "ping_payload",
    "push_payload",
    "requires_specs",
    "validate_webhook",
    "webhook_delivery",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
SPECS = REPO_ROOT.parent / "shared" / "specs"
REST_SPEC = SPECS / "github-rest-subset.json"
WEBHOOK_SPEC = SPECS / "github-webhooks-subset.json"
SPECS_MISSING = (
    f"GitHub's OpenAPI descriptions are not at {SPECS} "
    "(github-rest-subset.json, github-webhooks-subset.json): the shared/ folder is absent"
)
requires_specs = pytest.mark.skipif(
    not (REST_SPEC.exists() and WEBHOOK_SPEC.exists()), reason=SPECS_MISSING
)

API_VERSIONS = ("2022-11-28", "2026-03-10")
ZERO_SHA = "0" * 40
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _now_iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


# -- OpenAPI 3.0 schemas as JSON Schema ------------------------------------------------------
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not")
# OpenAPI-only keywords (annotations, or "nullable" which is rewritten below).
_OPENAPI_ONLY = {
    "nullable",
    "example",
    "examples",
    "discriminator",
    "readOnly",
    "writeOnly",
    "xml",
    "externalDocs",
    "deprecated",
}


def to_json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema object as Draft 4 JSON Schema: ``nullable`` becomes ``null``
    allowed, OpenAPI-only keywords and ``x-`` extensions go (property *names* are kept)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = to_json_schema(value)
        elif key in _OPENAPI_ONLY or key.startswith("x-"):
            continue
        else:
            out[key] = value
    if schema.get("nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema_rs  # a dependency of schemathesis (requirements-dev.txt)

    # "uri" formats are not checked: GitHub's own examples put URI templates
    # ("…/following{/other_user}") in fields its schema calls "uri".
    return jsonschema_rs.Draft4Validator(
        to_json_schema(schema), validate_formats=True, formats={"uri": lambda _: True}
    )


def _errors(validator: Any, instance: Any) -> list[str]:
    problems = []
    for error in validator.iter_errors(instance):
        where = "/".join(str(p) for p in error.instance_path) or "(body)"
        problems.append(f"{where}: {error.message}")
    return sorted(problems)


@functools.cache
def _rest_spec() -> dict[str, Any]:
    return dict(json.loads(REST_SPEC.read_text()))


@functools.cache
def _webhook_spec() -> dict[str, Any]:
    return dict(json.loads(WEBHOOK_SPEC.read_text()))


@dataclass(frozen=True)
class Operation:
    """One (method, path template) of the REST description, compiled for matching."""

    method: str
    template: str
    pattern: re.Pattern[str]
    operation: dict[str, Any]

    @functools.cached_property
    def body_validator(self) -> Any:
        body = self.operation.get("requestBody")
        schema = body and body["content"].get("application/json", {}).get("schema")
        return _validator(schema) if schema else None

    @property
    def body_required(self) -> bool:
        return bool((self.operation.get("requestBody") or {}).get("required"))

    def parameters(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.operation.get("parameters", []) if p.get("in") == where]

    def example(self, status: str = "") -> Any:
        """GitHub's first example response for ``status`` (the first 2xx by default)."""
        responses = self.operation["responses"]
        code = status or next(c for c in responses if c.startswith("2"))
        examples = responses[code]["content"]["application/json"]["examples"]
        return copy.deepcopy(next(iter(examples.values()))["value"])


@functools.cache
def _operations() -> tuple[Operation, ...]:
    found = []
    for template, methods in _rest_spec()["paths"].items():
        for method, operation in methods.items():
            regex = ""
            for part in re.split(r"(\{[^}]+\})", template):
                if part.startswith("{"):
                    name = part[1:-1]
                    param = next(
                        (p for p in operation.get("parameters", []) if p.get("name") == name), {}
                    )
                    segment = ".+" if param.get("x-multi-segment") else "[^/]+"
                    regex += f"(?P<{name}>{segment})"
                else:
                    regex += re.escape(part)
            found.append(Operation(method.upper(), template, re.compile(regex), operation))
    return tuple(found)


# Routes GitHub has that the stored subset of its description leaves out; served unchecked.
EXTRA_ROUTES = {("GET", "/repos/{owner}/{repo}/commits/{ref}/statuses")}
_EXTRA_PATTERNS = {
    (method, template): re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)))
    for method, template in EXTRA_ROUTES
}


# -- the fake ---------------------------------------------------------------------------------
@dataclass
class Recorded:
    """One request the fake received (``Authorization`` left out of ``headers``)."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    status: int = 0


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    path_contains: str


@dataclass
class _Installation:
    id: int
    account: str | None  # None: every repository is accessible


@dataclass
class _User:
    login: str
    id: int
    orgs: list[str] = field(default_factory=list)
    name: str | None = "monalisa octocat"  # GET /user's example, unless sign_in says otherwise


@dataclass(frozen=True)
class OAuthApp:
    """An OAuth app registered on the fake: its credentials and its callback URL."""

    client_id: str
    client_secret: str
    callback_url: str


@dataclass(frozen=True)
class _Grant:
    """A one-time code the authorize step handed out, until it is exchanged."""

    client_id: str
    redirect_uri: str | None  # as given to authorize; the exchange must repeat it
    user: _User
    scope: str
    expires: float


OAUTH_CODE_LIFETIME = 600.0  # GitHub: "The temporary code will expire after 10 minutes."
_OAUTH_ERRORS = {
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for this application.",
    "bad_verification_code": "The code passed is incorrect or expired.",
}
_OAUTH_DOCS = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"


def _redirect_allowed(callback_url: str, redirect_uri: str) -> bool:
    """GitHub's rule: the redirect URI's host is the callback's or a subdomain of it, the
    port is the same (any port on a loopback address), the path is the callback's or under it."""
    cb, ru = urlsplit(callback_url), urlsplit(redirect_uri)
    if ru.scheme != cb.scheme or not ru.hostname or not cb.hostname or ru.username is not None:
        return False
    host_ok = ru.hostname == cb.hostname or ru.hostname.endswith("." + cb.hostname)
    loopback = cb.hostname in ("127.0.0.1", "::1") and ru.hostname == cb.hostname
    default = {"http": 80, "https": 443}.get(cb.scheme)
    port_ok = loopback or (ru.port or default) == (cb.port or default)
    base = cb.path.rstrip("/")
    path_ok = ru.path == cb.path or ru.path.startswith(base + "/")
    return host_ok and port_ok and path_ok


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class _Answer(Exception):
    """Stop handling and answer ``status`` with GitHub's error shape."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            **extra,
        }


class FakeGitHub:
    """GitHub's REST API for one GitHub App, on an ephemeral loopback port."""

    def __init__(self, *, app_id: str = "424242", token_lifetime: float = 3600.0) -> None:
        self.app_id = app_id
        self.token_lifetime = token_lifetime
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.public_key = key.public_key()
        self.installation_id = 1001
        self.installations: dict[int, _Installation] = {1001: _Installation(1001, None)}
        self.tokens: dict[str, tuple[int, float]] = {}
        self.minted_tokens: list[str] = []  # every token ever minted, revoked ones too
        self.users: dict[str, _User] = {}
        self.oauth_apps: dict[str, OAuthApp] = {}
        self.oauth_tokens: list[str] = []  # every OAuth access token handed out
        self.signed_in: _User | None = None  # the browser's GitHub session
        self.approve = True  # False: the user clicks "Cancel" on the authorize page
        self._grants: dict[str, _Grant] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.statuses: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self._failures: list[_Failure] = []
        self._next_id = 1
        self._lock = threading.RLock()
        self._server: LoopbackWsgi | None = None
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeGitHub:
        self._server = LoopbackWsgi(self._wsgi)
        self.url = f"http://127.0.0.1:{self._server.port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    # -- test controls ------------------------------------------------------------------------
    def add_installation(self, installation_id: int, account: str | None = None) -> None:
        """Install the App; ``account`` limits its tokens to that owner's repositories."""
        self.installations[installation_id] = _Installation(installation_id, account)

    def add_user(
        self, token: str, login: str, user_id: int = 7001, orgs: list[str] | None = None
    ) -> None:
        """An OAuth user token for ``GET /user`` and ``GET /user/orgs``."""
        self.users[token] = _User(login, user_id, list(orgs or []))

    def add_oauth_app(
        self,
        callback_url: str,
        *,
        client_id: str = "Ov23liFakeClient0001",
        client_secret: str | None = None,
    ) -> OAuthApp:
        """Register an OAuth app whose callback URL is ``callback_url``; returns it (a
        random client secret unless given)."""
        app = OAuthApp(client_id, client_secret or secrets.token_hex(20), callback_url)
        with self._lock:
            self.oauth_apps[client_id] = app
        return app

    def sign_in(
        self,
        login: str | None,
        *,
        user_id: int = 7001,
        orgs: list[str] | None = None,
        name: str | None = None,
        approve: bool = True,
    ) -> None:
        """The user signed in to GitHub in the browser (``None``: nobody is), and whether
        they approve the app on the authorize page."""
        with self._lock:
            self.signed_in = (
                None if login is None else _User(login, user_id, list(orgs or []), name)
            )
            self.approve = approve

    def revoke_tokens(self) -> None:
        """Invalidate every installation token minted so far (as a permission change does)."""
        with self._lock:
            self.tokens.clear()

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        path_contains: str = "",
    ) -> None:
        """Answer the next ``n`` requests (whose path contains ``path_contains``) with ``status``."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        with self._lock:
            self._failures.extend(_Failure(status, extra, path_contains) for _ in range(n))

    def rate_limit_next(
        self, n: int = 1, *, reset_in: float = 0.0, path_contains: str = ""
    ) -> None:
        """Answer the next ``n`` requests 403 with an exhausted primary rate limit."""
        self.fail_next(
            n,
            status=403,
            headers={
                "x-ratelimit-limit": "5000",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": f"{time.time() + reset_in:.3f}",
            },
            path_contains=path_contains,
        )

    def calls(self, method: str | None = None, path_contains: str = "") -> list[Recorded]:
        """Recorded requests, filtered by method and a substring of the path."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and path_contains in r.path
            ]

    def runs_for(self, owner: str, repo: str, sha: str) -> list[dict[str, Any]]:
        """The check runs stored for a commit, oldest first."""
        key = f"{owner}/{repo}".lower()
        with self._lock:
            return [
                copy.deepcopy(r)
                for r in self.check_runs.values()
                if r["_repo"] == key and r["head_sha"] == sha
            ]

    def statuses_for(self, owner: str, repo: str, sha: str) -> list[dict[str, Any]]:
        """Commit statuses stored for a commit, newest first."""
        with self._lock:
            return copy.deepcopy(self.statuses.get((owner.lower(), repo.lower(), sha), []))

    # -- WSGI -------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self._handle(request)
        return response(environ, start_response)

    def _handle(self, request: Request) -> Response:
        raw = request.get_data()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("latin-1")
        if request.path.startswith("/login/oauth/") and request.mimetype == _FORM:
            body = {k: ("***" if k == "client_secret" else v) for k, v in _form(raw).items()}
        record = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.args.items()),
            json=body,
            headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
        )
        with self._lock:
            self.requests.append(record)
        extra_headers: dict[str, str] = {}
        try:
            status, payload = self._route(request, raw, body, extra_headers)
        except _Answer as answer:
            status, payload = answer.status, answer.body
        record.status = status
        if isinstance(payload, Response):  # the OAuth pages: redirects, forms, HTML
            response = payload
            response.status_code = status
        else:
            response = Response(
                json.dumps(payload), status=status, content_type="application/json; charset=utf-8"
            )
        response.headers["X-GitHub-Request-Id"] = uuid.uuid4().hex[:20].upper()
        for key, value in extra_headers.items():
            response.headers[key] = value
        return response

    def _violation(self, status: int, message: str, request: Request, **extra: Any) -> _Answer:
        with self._lock:
            self.violations.append(f"{request.method} {request.path}: {message}")
        return _Answer(status, message, **extra)

    def _route(
        self, request: Request, raw: bytes, body: Any, extra_headers: dict[str, str]
    ) -> tuple[int, Any]:
        method, path = request.method, request.path
        oauth = self._oauth_handlers().get((method, path))
        if oauth is not None:  # github.com's OAuth pages, not the REST API
            failure = self._take_failure(path)
            if failure is not None:
                extra_headers.update(failure.headers)
                raise _Answer(failure.status, "Server Error")
            return oauth(request, raw)
        operation, params = self._match(method, path)
        if operation is None and params is None:
            raise self._violation(
                404, f"Not Found (no {method} {path} in GitHub's REST API)", request
            )
        failure = self._take_failure(path)
        if failure is not None:
            extra_headers.update(failure.headers)
            message = "Server Error" if failure.status >= 500 else "API rate limit exceeded"
            raise _Answer(failure.status, message)
        version = request.headers.get("X-GitHub-Api-Version")
        if version is not None and version not in API_VERSIONS:
            raise self._violation(
                400, f"Unsupported 'X-GitHub-Api-Version' header: {version}", request
            )
        assert params is not None
        if operation is not None:
            self._check_request(operation, params, request, raw, body)
            template = operation.template
        else:
            template = next(
                t for (m, t), p in _EXTRA_PATTERNS.items() if m == method and p.fullmatch(path)
            )
        handler = self._handlers().get((method, template))
        if handler is None:
            raise _Answer(501, f"the fake does not implement {method} {template}")
        return handler(request, params, body)

    @staticmethod
    def _match(method: str, path: str) -> tuple[Operation | None, dict[str, str] | None]:
        """The operation and path parameters; ``(None, params)`` for an :data:`EXTRA_ROUTES`
        route, ``(None, None)`` when GitHub has no such method and path (it answers 404)."""
        for op in _operations():
            found = op.pattern.fullmatch(path)
            if found and op.method == method:
                return op, found.groupdict()
        for (m, _template), pattern in _EXTRA_PATTERNS.items():
            found = pattern.fullmatch(path)
            if found and m == method:
                return None, found.groupdict()
        return None, None

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            for i, failure in enumerate(self._failures):
                if failure.path_contains in path:
                    return self._failures.pop(i)
        return None

    def _check_request(
        self, op: Operation, params: dict[str, str], request: Request, raw: bytes, body: Any
    ) -> None:
        for param in op.parameters("path"):
            if (
                param.get("schema", {}).get("type") == "integer"
                and not params[param["name"]].isdigit()
            ):
                raise self._violation(
                    404, f"Not Found ({param['name']} must be an integer)", request
                )
        for param in op.parameters("query"):
            name = param["name"]
            if name not in request.args:
                continue
            value: Any = request.args[name]
            schema = param.get("schema", {})
            if schema.get("type") == "integer":
                if not value.isdigit():
                    raise self._violation(
                        422, f"Invalid request: {name} must be an integer", request
                    )
                value = int(value)
            problems = _errors(_validator(schema), value)
            if problems:
                raise self._violation(
                    422, f"Invalid request: {name}: {'; '.join(problems)}", request
                )
        if op.body_validator is None:
            return
        if not raw:
            if op.body_required:
                raise self._violation(422, "Invalid request: a JSON body is required", request)
            return
        if isinstance(body, str):
            raise self._violation(400, "Problems parsing JSON", request)
        if not (request.content_type or "").startswith("application/json"):
            raise self._violation(415, "Unsupported Media Type: send application/json", request)
        problems = _errors(op.body_validator, body)
        if problems:
            raise self._violation(422, "Invalid request.\n\n" + "\n".join(problems), request)

    # -- authentication ---------------------------------------------------------------------
    def _bearer(self, request: Request) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not credential:
            raise _Answer(401, "Requires authentication")
        return credential.strip()

    def _app_jwt(self, request: Request) -> None:
        token = self._bearer(request)
        try:
            claims = pyjwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["iat", "exp", "iss"], "verify_iat": False},
                leeway=0,
            )
        except pyjwt.ExpiredSignatureError:
            raise _Answer(
                401,
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires",
            ) from None
        except pyjwt.PyJWTError:
            raise _Answer(401, "A JSON web token could not be decoded") from None
        now = time.time()
        if str(claims["iss"]) != self.app_id:
            raise _Answer(401, f"'Issuer' claim ('iss') must be the App id {self.app_id}")
        if claims["exp"] > now + 600 + 5:
            raise _Answer(401, "'Expiration time' claim ('exp') is too far in the future")
        if claims["iat"] > now + 60:
            raise _Answer(
                401,
                "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            )

    def _installation_for(self, request: Request, owner: str) -> int:
        token = self._bearer(request)
        with self._lock:
            entry = self.tokens.get(token)
        if entry is None or entry[1] <= time.time():
            raise _Answer(401, "Bad credentials")
        installation = self.installations.get(entry[0])
        if installation is None:
            raise _Answer(401, "Bad credentials")
        if installation.account is not None and installation.account.lower() != owner.lower():
            raise _Answer(403, "Resource not accessible by integration")
        return installation.id

    def _user(self, request: Request) -> _User:
        user = self.users.get(self._bearer(request))
        if user is None:
            raise _Answer(401, "Bad credentials")
        return user

    # -- endpoints --------------------------------------------------------------------------
    def _handlers(self) -> dict[tuple[str, str], Any]:
        return {
            ("POST", "/app/installations/{installation_id}/access_tokens"): self._create_token,
            ("GET", "/app"): self._get_app,
            ("POST", "/repos/{owner}/{repo}/check-runs"): self._create_check_run,
            ("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}"): self._update_check_run,
            ("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}"): self._get_check_run,
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs"): self._list_check_runs,
            ("POST", "/repos/{owner}/{repo}/statuses/{sha}"): self._create_status,
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/statuses"): self._list_statuses,
            ("GET", "/repos/{owner}/{repo}/commits/{ref}/status"): self._combined_status,
            ("GET", "/user"): self._get_user,
            ("GET", "/user/orgs"): self._get_user_orgs,
        }

    def _op(self, method: str, template: str) -> Operation:
        return next(o for o in _operations() if o.method == method and o.template == template)

    def _new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def _create_token(self, request: Request, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self._app_jwt(request)
        installation_id = int(params["installation_id"])
        if installation_id not in self.installations:
            raise _Answer(404, "Not Found")
        token = "ghs_" + secrets.token_hex(18)
        expires = time.time() + self.token_lifetime
        with self._lock:
            self.tokens[token] = (installation_id, expires)
            self.minted_tokens.append(token)
        answer = self._op("POST", "/app/installations/{installation_id}/access_tokens").example()
        answer.update(
            token=token,
            expires_at=_now_iso(expires),
            permissions={"checks": "write", "statuses": "write", "contents": "read"},
            repository_selection="all",
        )
        answer.pop("repositories", None)
        return 201, answer

    def _get_app(self, request: Request, params: dict[str, str], body: Any) -> tuple[int, Any]:
        self._app_jwt(request)
        answer = self._op("GET", "/app").example()
        answer.update(id=int(self.app_id), slug="ofc-test-app", name="ofc test app")
        return 200, answer

    def _check_run_answer(self, run: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in run.items() if not k.startswith("_")}

    def _create_check_run(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        owner, repo = params["owner"], params["repo"]
        self._installation_for(request, owner)
        status = body.get("status", "queued")
        if body.get("conclusion"):
            status = "completed"  # GitHub: providing a conclusion sets status completed
        if (status == "completed" or body.get("completed_at")) and not body.get("conclusion"):
            raise self._violation(
                422,
                "Invalid request: conclusion is required when status is completed or completed_at is given",
                request,
            )
        run_id = self._new_id()
        run = self._op("POST", "/repos/{owner}/{repo}/check-runs").example()
        api = f"https://api.github.com/repos/{owner}/{repo}"
        run.update(
            id=run_id,
            node_id=f"CR_{run_id}",
            head_sha=body["head_sha"],
            name=body["name"],
            external_id=body.get("external_id", ""),
            url=f"{api}/check-runs/{run_id}",
            html_url=f"https://github.com/{owner}/{repo}/runs/{run_id}",
            details_url=body.get("details_url"),
            status=status,
            conclusion=body.get("conclusion"),
            started_at=body.get("started_at") or _now_iso(),
            completed_at=body.get("completed_at")
            or (_now_iso() if status == "completed" else None),
            check_suite={"id": 1},
            pull_requests=[],
            output=self._output(body.get("output"), api, run_id),
        )
        run["app"]["id"] = int(self.app_id)
        run["_repo"] = f"{owner}/{repo}".lower()
        with self._lock:
            self.check_runs[run_id] = run
        return 201, self._check_run_answer(run)

    @staticmethod
    def _output(given: dict[str, Any] | None, api: str, run_id: int) -> dict[str, Any]:
        given = given or {}
        return {
            "title": given.get("title"),
            "summary": given.get("summary"),
            "text": given.get("text"),
            "annotations_count": len(given.get("annotations", [])),
            "annotations_url": f"{api}/check-runs/{run_id}/annotations",
        }

    def _find_run(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        owner, repo = params["owner"], params["repo"]
        self._installation_for(request, owner)
        run = self.check_runs.get(int(params["check_run_id"]))
        if run is None or run["_repo"] != f"{owner}/{repo}".lower():
            raise _Answer(404, "Not Found")
        return run

    def _get_check_run(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        with self._lock:
            return 200, self._check_run_answer(self._find_run(request, params))

    def _update_check_run(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        run = self._find_run(request, params)
        status = body.get("status")
        if body.get("conclusion"):
            status = "completed"
        if status == "completed" and not body.get("conclusion"):
            raise self._violation(
                422, "Invalid request: conclusion is required when status is completed", request
            )
        api = f"https://api.github.com/repos/{params['owner']}/{params['repo']}"
        with self._lock:
            for key in ("name", "details_url", "external_id", "started_at"):
                if key in body:
                    run[key] = body[key]
            if status is not None:
                run["status"] = status
                if status == "completed":
                    run["conclusion"] = body["conclusion"]
                    run["completed_at"] = body.get("completed_at") or _now_iso()
                else:
                    run["conclusion"] = None
                    run["completed_at"] = None
            if "output" in body:
                run["output"] = self._output(body["output"], api, run["id"])
            return 200, self._check_run_answer(run)

    def _list_check_runs(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        owner, repo, ref = params["owner"], params["repo"], params["ref"]
        self._installation_for(request, owner)
        args = request.args
        with self._lock:
            runs = [
                r
                for r in self.check_runs.values()
                if r["_repo"] == f"{owner}/{repo}".lower() and r["head_sha"] == ref
            ]
        if "check_name" in args:
            runs = [r for r in runs if r["name"] == args["check_name"]]
        if "status" in args:
            runs = [r for r in runs if r["status"] == args["status"]]
        if "app_id" in args:
            runs = [r for r in runs if str(r["app"]["id"]) == args["app_id"]]
        if args.get("filter", "latest") == "latest":
            latest: dict[str, dict[str, Any]] = {}
            for run in runs:
                latest[run["name"]] = run  # ids grow, so the last one seen is the newest
            runs = list(latest.values())
        runs.sort(key=lambda r: r["id"], reverse=True)
        per_page, page = int(args.get("per_page", 30)), int(args.get("page", 1))
        chunk = runs[(page - 1) * per_page : page * per_page]
        return 200, {
            "total_count": len(runs),
            "check_runs": [self._check_run_answer(r) for r in chunk],
        }

    def _create_status(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        owner, repo, sha = params["owner"], params["repo"], params["sha"]
        self._installation_for(request, owner)
        if not _SHA.match(sha):
            raise _Answer(422, f"No commit found for SHA: {sha}")
        description = body.get("description")
        if description is not None and len(description) > 140:
            # Not in the description document, but what GitHub answers (many integrators' reports).
            raise self._violation(
                422,
                "Validation Failed",
                request,
                errors=[
                    {
                        "resource": "Status",
                        "code": "custom",
                        "field": "description",
                        "message": "description is too long (maximum is 140 characters)",
                    }
                ],
            )
        status_id = self._new_id()
        answer = self._op("POST", "/repos/{owner}/{repo}/statuses/{sha}").example()
        answer.update(
            id=status_id,
            node_id=f"SC_{status_id}",
            url=f"https://api.github.com/repos/{owner}/{repo}/statuses/{sha}",
            state=body["state"],
            description=description,
            target_url=body.get("target_url"),
            context=body.get("context", "default"),
            created_at=_now_iso(),
            updated_at=_now_iso(),
        )
        answer["creator"]["login"] = "ofc-test-app[bot]"
        with self._lock:
            self.statuses.setdefault((owner.lower(), repo.lower(), sha), []).insert(0, answer)
        return 201, copy.deepcopy(answer)

    def _list_statuses(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        self._installation_for(request, params["owner"])
        return 200, self.statuses_for(params["owner"], params["repo"], params["ref"])

    def _combined_status(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        owner, repo, ref = params["owner"], params["repo"], params["ref"]
        self._installation_for(request, owner)
        latest: dict[str, dict[str, Any]] = {}
        for status in reversed(self.statuses_for(owner, repo, ref)):
            latest[status["context"].lower()] = status
        states = [s["state"] for s in latest.values()]
        if any(s in ("error", "failure") for s in states):
            overall = "failure"
        elif not states or "pending" in states:
            overall = "pending"
        else:
            overall = "success"
        answer = self._op("GET", "/repos/{owner}/{repo}/commits/{ref}/status").example()
        answer.update(
            state=overall, statuses=list(latest.values()), sha=ref, total_count=len(latest)
        )
        return 200, answer

    def _get_user(self, request: Request, params: dict[str, str], body: Any) -> tuple[int, Any]:
        user = self._user(request)
        answer = self._op("GET", "/user").example()
        answer.update(
            login=user.login,
            id=user.id,
            name=user.name,
            html_url=f"https://github.com/{user.login}",
        )
        return 200, answer

    def _get_user_orgs(
        self, request: Request, params: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        user = self._user(request)
        template = self._op("GET", "/user/orgs").example()[0]
        per_page, page = int(request.args.get("per_page", 30)), int(request.args.get("page", 1))
        start = (page - 1) * per_page
        orgs = []
        for i, login in enumerate(user.orgs[start : start + per_page], start):
            org = copy.deepcopy(template)
            org.update(login=login, id=9000 + i, url=f"https://api.github.com/orgs/{login}")
            orgs.append(org)
        return 200, orgs

    # -- OAuth web flow (github.com, not the API) ----------------------------------------------
    def _oauth_handlers(self) -> dict[tuple[str, str], Any]:
        return {
            ("GET", "/login/oauth/authorize"): self._oauth_authorize,
            ("POST", "/login/oauth/access_token"): self._oauth_access_token,
        }

    def _oauth_authorize(self, request: Request, raw: bytes) -> tuple[int, Response]:
        args = request.args
        with self._lock:
            app = self.oauth_apps.get(args.get("client_id", ""))
            user, approve = self.signed_in, self.approve
        if app is None:
            return 404, Response("Not Found", content_type="text/html; charset=utf-8")
        state = {"state": args["state"]} if "state" in args else {}
        redirect_uri = args.get("redirect_uri")
        if redirect_uri is not None and not _redirect_allowed(app.callback_url, redirect_uri):
            # GitHub sends the browser to the registered callback URL with the error.
            error = {
                "error": "redirect_uri_mismatch",
                "error_description": _OAUTH_ERRORS["redirect_uri_mismatch"],
                "error_uri": _OAUTH_DOCS,
            }
            return 302, _redirect(_with_query(app.callback_url, {**error, **state}))
        target = redirect_uri or app.callback_url
        if user is None:
            return 200, Response(
                "<html><body>Sign in to GitHub</body></html>", content_type="text/html"
            )
        if not approve:
            denied = {
                "error": "access_denied",
                "error_description": "The user has denied your application access.",
                "error_uri": _OAUTH_DOCS,
            }
            return 302, _redirect(_with_query(target, {**denied, **state}))
        code = secrets.token_hex(10)
        scope = ",".join(s for s in re.split(r"[\s,]+", args.get("scope", "")) if s)
        with self._lock:
            self._grants[code] = _Grant(
                app.client_id, redirect_uri, user, scope, time.time() + OAUTH_CODE_LIFETIME
            )
        return 302, _redirect(_with_query(target, {"code": code, **state}))

    def _oauth_access_token(self, request: Request, raw: bytes) -> tuple[int, Response]:
        params = dict(request.args.items())
        if request.mimetype == _FORM:
            params.update(_form(raw))
        elif request.mimetype == "application/json" and raw:
            params.update({k: str(v) for k, v in json.loads(raw).items()})
        wants_json = "application/json" in request.headers.get("Accept", "")

        def answer(fields: dict[str, str]) -> tuple[int, Response]:
            if wants_json:
                return 200, Response(
                    json.dumps(fields), content_type="application/json; charset=utf-8"
                )
            return 200, Response(
                urlencode(fields), content_type="application/x-www-form-urlencoded"
            )

        def error(name: str) -> tuple[int, Response]:
            return answer(
                {"error": name, "error_description": _OAUTH_ERRORS[name], "error_uri": _OAUTH_DOCS}
            )

        with self._lock:
            app = self.oauth_apps.get(params.get("client_id", ""))
            if app is None or not secrets.compare_digest(
                params.get("client_secret", ""), app.client_secret
            ):
                return error("incorrect_client_credentials")
            grant = self._grants.get(params.get("code", ""))
            if grant is None or grant.client_id != app.client_id or grant.expires < time.time():
                return error("bad_verification_code")
            if grant.redirect_uri is not None and params.get("redirect_uri") != grant.redirect_uri:
                return error("redirect_uri_mismatch")
            del self._grants[params["code"]]  # a code is good for one exchange
            token = "gho_" + secrets.token_hex(18)
            self.users[token] = grant.user
            self.oauth_tokens.append(token)
        return answer({"access_token": token, "token_type": "bearer", "scope": grant.scope})


_FORM = "application/x-www-form-urlencoded"


def _form(raw: bytes) -> dict[str, str]:
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def _redirect(location: str) -> Response:
    return Response("", status=302, headers={"Location": location})


# The explicit name makes pytest register it as "fake_github" under any import alias.
@pytest.fixture(name="fake_github")
def fake_github() -> Iterator[FakeGitHub]:
    """A started :class:`FakeGitHub`; skipped when GitHub's descriptions are not in shared/."""
    if not (REST_SPEC.exists() and WEBHOOK_SPEC.exists()):
        pytest.skip(SPECS_MISSING)
    fake = FakeGitHub().start()
    yield fake
    fake.stop()


# -- webhooks ---------------------------------------------------------------------------------
def webhook_delivery(
    event: str, payload: dict[str, Any], secret: str, *, app_id: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers GitHub sends for ``event`` (both signatures, a fresh delivery id)."""
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/8e03811",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "512345678",
        "X-Hub-Signature": sign(body, secret, "sha1"),
        "X-Hub-Signature-256": sign(body, secret),
    }
    if app_id is not None:
        headers["X-GitHub-Hook-Installation-Target-Type"] = "integration"
        headers["X-GitHub-Hook-Installation-Target-ID"] = str(app_id)
    return body, headers


@functools.cache
def _webhook_validator(key: str) -> Any:
    hooks = _webhook_spec()["x-webhooks"]
    schema = hooks[key]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return _validator(schema)


def webhook_key(event: str, action: str | None = None) -> str:
    """The ``x-webhooks`` entry for an event and action (``installation_repositories``,
    ``added`` → ``installation-repositories-added``; ``push`` has no action)."""
    hooks = _webhook_spec()["x-webhooks"]
    base = event.replace("_", "-")
    for key in (f"{base}-{action.replace('_', '-')}" if action else None, base):
        if key and key in hooks:
            return key
    raise ValueError(
        f"no webhook {event!r} action {action!r} in the spec; known: {', '.join(hooks)}"
    )


def validate_webhook(event: str, action: str | None, payload: Any) -> list[str]:
    """Problems of ``payload`` against GitHub's schema for the event; empty when it is valid."""
    return _errors(_webhook_validator(webhook_key(event, action)), payload)


def _node_id(kind: str, number: int) -> str:
    return f"{kind}_kgDO{number:08d}"


def _user(login: str, user_id: int, kind: str = "User") -> dict[str, Any]:
    """GitHub's "Simple User" (also the ``sender``)."""
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login,
        "id": user_id,
        "node_id": _node_id("U" if kind == "User" else "O", user_id),
        "avatar_url": f"https://avatars.githubusercontent.com/u/{user_id}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }


def _organization(login: str, org_id: int) -> dict[str, Any]:
    api = f"https://api.github.com/orgs/{login}"
    return {
        "login": login,
        "id": org_id,
        "node_id": _node_id("O", org_id),
        "url": api,
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events",
        "hooks_url": f"{api}/hooks",
        "issues_url": f"{api}/issues",
        "members_url": f"{api}/members{{/member}}",
        "public_members_url": f"{api}/public_members{{/member}}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{org_id}?v=4",
        "description": None,
    }


def _repo_id(owner: str, repo: str) -> int:
    return 100_000 + int(hashlib.sha256(f"{owner}/{repo}".lower().encode()).hexdigest()[:6], 16)


def _repository(
    owner: str, repo: str, owner_id: int, owner_type: str, private: bool, default_branch: str
) -> dict[str, Any]:
    """The push event's ``repository`` (every field GitHub's schema requires)."""
    full = f"{owner}/{repo}"
    api = f"https://api.github.com/repos/{full}"
    repo_id = _repo_id(owner, repo)
    owner_object = _user(owner, owner_id, owner_type)
    owner_object.update(name=owner, email=None)
    return {
        "id": repo_id,
        "node_id": _node_id("R", repo_id),
        "name": repo,
        "full_name": full,
        "private": private,
        "owner": owner_object,
        "html_url": f"https://github.com/{full}",
        "description": None,
        "fork": False,
        "url": f"https://github.com/{full}",
        **{key: f"{api}/{suffix}" for key, suffix in REPOSITORY_URL_FIELDS.items()},
        "created_at": 1_700_000_000,
        "updated_at": "2024-01-02T03:04:05Z",
        "pushed_at": int(time.time()),
        "git_url": f"git://github.com/{full}.git",
        "ssh_url": f"git@github.com:{full}.git",
        "clone_url": f"https://github.com/{full}.git",
        "svn_url": f"https://github.com/{full}",
        "homepage": None,
        "size": 12,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": "Python",
        "has_issues": True,
        "has_projects": True,
        "has_downloads": True,
        "has_wiki": True,
        "has_pages": False,
        "has_discussions": False,
        "forks_count": 0,
        "mirror_url": None,
        "archived": False,
        "disabled": False,
        "open_issues_count": 0,
        "license": None,
        "allow_forking": True,
        "is_template": False,
        "web_commit_signoff_required": False,
        "topics": [],
        "visibility": "private" if private else "public",
        "forks": 0,
        "open_issues": 0,
        "watchers": 0,
        "default_branch": default_branch,
        "stargazers": 0,
        "master_branch": default_branch,
        **({"organization": owner} if owner_type == "Organization" else {}),
    }


def _commit(owner: str, repo: str, sha: str, n: int, login: str) -> dict[str, Any]:
    person = {"name": login, "email": f"{login}@users.noreply.github.com", "username": login}
    return {
        "id": sha,
        "tree_id": hashlib.sha1(f"tree-{sha}".encode()).hexdigest(),
        "distinct": True,
        "message": f"Change {n}",
        "timestamp": "2024-01-02T03:04:05+00:00",
        "url": f"https://github.com/{owner}/{repo}/commit/{sha}",
        "author": person,
        "committer": person,
        "added": [],
        "removed": [],
        "modified": ["stack.yml"],
    }


def _random_sha() -> str:
    return secrets.token_hex(20)


def push_payload(
    *,
    owner: str = "alice",
    repo: str = "functions",
    sha: str | None = None,
    before: str | None = None,
    ref: str = "refs/heads/main",
    private: bool = False,
    installation_id: int | None = 1001,
    owner_type: str = "User",
    owner_id: int = 5001,
    default_branch: str = "main",
    deleted: bool = False,
    created: bool = False,
    commits: int = 1,
    sender: str | None = None,
) -> dict[str, Any]:
    """A ``push`` payload as GitHub sends it to an App (``installation_id=None``: a repo hook).

    ``deleted``: a branch deletion (``after`` all zeros, no commits, ``head_commit`` null);
    ``created``: a new branch (``before`` all zeros).
    """
    if owner_type not in ("User", "Organization"):
        raise ValueError("owner_type is User or Organization")
    after = ZERO_SHA if deleted else (sha or _random_sha())
    previous = ZERO_SHA if created else (before or _random_sha())
    pusher = sender or (owner if owner_type == "User" else "bob")
    shas = [] if deleted or commits <= 0 else [_random_sha() for _ in range(commits - 1)] + [after]
    commit_list = [_commit(owner, repo, s, i + 1, pusher) for i, s in enumerate(shas)]
    payload: dict[str, Any] = {
        "ref": ref,
        "before": previous,
        "after": after,
        "repository": _repository(owner, repo, owner_id, owner_type, private, default_branch),
        "pusher": {"name": pusher, "email": f"{pusher}@users.noreply.github.com"},
        "sender": _user(pusher, owner_id if pusher == owner else 5999),
        "created": created,
        "deleted": deleted,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/{owner}/{repo}/compare/{previous[:12]}...{after[:12]}",
        "commits": commit_list,
        # A push of no new commits (a branch created at an existing one) still names it.
        "head_commit": copy.deepcopy(commit_list[-1])
        if commit_list
        else (None if deleted else _commit(owner, repo, after, 1, pusher)),
    }
    if owner_type == "Organization":
        payload["organization"] = _organization(owner, owner_id)
    if installation_id is not None:
        payload["installation"] = {
            "id": installation_id,
            "node_id": _node_id("MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9u", installation_id),
        }
    return payload


def _installation(
    installation_id: int,
    account: str,
    account_id: int,
    owner_type: str,
    app_id: int,
    selection: str,
) -> dict[str, Any]:
    return {
        "id": installation_id,
        "client_id": "Iv1.0123456789abcdef",
        "account": _user(account, account_id, owner_type),
        "repository_selection": selection,
        "access_tokens_url": f"https://api.github.com/app/installations/{installation_id}/access_tokens",
        "repositories_url": "https://api.github.com/installation/repositories",
        "html_url": (
            f"https://github.com/organizations/{account}/settings/installations/{installation_id}"
            if owner_type == "Organization"
            else f"https://github.com/settings/installations/{installation_id}"
        ),
        "app_id": app_id,
        "app_slug": "ofc-test-app",
        "target_id": account_id,
        "target_type": owner_type,
        "permissions": {
            "checks": "write",
            "contents": "read",
            "metadata": "read",
            "statuses": "write",
        },
        "events": ["push"],
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2024-01-02T03:04:05Z",
        "single_file_name": None,
        "has_multiple_single_files": False,
        "single_file_paths": [],
        "suspended_by": None,
        "suspended_at": None,
    }


def _repo_brief(account: str, name: str, private: bool = False) -> dict[str, Any]:
    repo_id = _repo_id(account, name)
    return {
        "id": repo_id,
        "node_id": _node_id("R", repo_id),
        "name": name,
        "full_name": f"{account}/{name}",
        "private": private,
    }


def installation_payload(
    action: str = "created",
    *,
    installation_id: int = 1001,
    account: str = "alice",
    account_id: int = 5001,
    owner_type: str = "User",
    app_id: int = 424242,
    repositories: list[str] | None = None,
    sender: str | None = None,
) -> dict[str, Any]:
    """An ``installation`` payload (``created``, ``deleted``, ``suspend``, ``unsuspend``,
    ``new_permissions_accepted``); ``repositories`` lists names, ``None`` means all."""
    who = sender or account
    payload: dict[str, Any] = {
        "action": action,
        "installation": _installation(
            installation_id,
            account,
            account_id,
            owner_type,
            app_id,
            "all" if repositories is None else "selected",
        ),
        "repositories": [_repo_brief(account, name) for name in repositories or []],
        "requester": None,
        "sender": _user(who, account_id if who == account else 5999),
    }
    if owner_type == "Organization":
        payload["organization"] = _organization(account, account_id)
    return payload


def installation_repositories_payload(
    action: str = "added",
    *,
    installation_id: int = 1001,
    account: str = "alice",
    account_id: int = 5001,
    owner_type: str = "User",
    app_id: int = 424242,
    added: list[str] | None = None,
    removed: list[str] | None = None,
) -> dict[str, Any]:
    """An ``installation_repositories`` payload: repositories ``added`` or ``removed``."""
    payload: dict[str, Any] = {
        "action": action,
        "installation": _installation(
            installation_id, account, account_id, owner_type, app_id, "selected"
        ),
        "repository_selection": "selected",
        "repositories_added": [_repo_brief(account, name) for name in added or []],
        "repositories_removed": [_repo_brief(account, name) for name in removed or []],
        "requester": None,
        "sender": _user(account, account_id),
    }
    if owner_type == "Organization":
        payload["organization"] = _organization(account, account_id)
    return payload


def ping_payload(*, hook_id: int = 512345678, app_id: int | None = 424242) -> dict[str, Any]:
    """The ``ping`` GitHub sends when a hook (here an App's) is created."""
    hook: dict[str, Any] = {
        "type": "App" if app_id is not None else "Repository",
        "id": hook_id,
        "name": "web",
        "active": True,
        "events": ["push", "installation", "installation_repositories"],
        "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://example.com/hook"},
        "updated_at": "2024-01-02T03:04:05Z",
        "created_at": "2024-01-02T03:04:05Z",
    }
    if app_id is not None:
        hook["app_id"] = app_id
    return {"zen": "Keep it logically awesome.", "hook_id": hook_id, "hook": hook}
