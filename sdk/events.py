"""Records that flow between the pipeline's stages, defined once (see docs/pipeline.md).

Each is a frozen dataclass with ``to_json``/``from_json``; JSON keys are the field names
(snake_case). ``from_json`` raises :class:`RecordError` naming the field that is missing
or of the wrong type, so a stage can answer 400 with a message a person can act on.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar, get_type_hints

from sdk.openfaas import RecordError

__all__ = [
    "RecordError",
    "PushEvent",
    "GarbageRequest",
    "CommitStatus",
    "PipelineLog",
    "AuditEvent",
    "BuildResult",
    "BuildRequest",
    "STATES",
    "STACK_CONTEXT",
]

T = TypeVar("T")

STATES = ("pending", "success", "failure", "error")
STACK_CONTEXT = "stack-deploy"
_SHA = re.compile(r"^[0-9a-f]{40}$")


def _from_json(cls: type[T], body: object) -> T:
    if not isinstance(body, dict):
        raise RecordError(f"{cls.__name__}: body must be a JSON object")
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in body:
            if f.default is not MISSING or f.default_factory is not MISSING:
                continue
            raise RecordError(f"{cls.__name__}: {f.name} is required")
        value = body[f.name]
        expected = hints[f.name]
        if not _matches(value, expected):
            raise RecordError(
                f"{cls.__name__}: {f.name} has the wrong type ({type(value).__name__})"
            )
        values[f.name] = value
    return cls(**values)


def _matches(value: object, expected: object) -> bool:
    text = str(expected)
    if value is None:
        return "None" in text
    if expected is bool or text.startswith("bool"):
        return isinstance(value, bool)
    if expected is int or text.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str or text.startswith("str"):
        return isinstance(value, str)
    if text.startswith("dict[str, typing.Any]"):
        return isinstance(value, dict)
    if text.startswith("dict"):
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
    if text.startswith("list"):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return True


class _Record:
    def to_json(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_json(cls: type[T], body: object) -> T:
        record = _from_json(cls, body)
        record._check()  # type: ignore[attr-defined]
        return record

    def _check(self) -> None:
        pass


@dataclass(frozen=True)
class PushEvent(_Record):
    """A push to build: what github-event hands to github-push, and github-push to git-tar."""

    delivery_id: str
    owner: str  # login as GitHub spells it (case kept)
    owner_id: int
    repo: str
    full_name: str
    clone_url: str
    html_url: str
    private: bool
    ref: str
    sha: str  # the pushed commit, 40 hex
    default_branch: str
    installation_id: int | None = None
    before: str = ""
    commits: int = 0
    scm: str = "github"

    @property
    def branch(self) -> str:
        """``main`` for ``refs/heads/main``; empty for tags."""
        prefix = "refs/heads/"
        return self.ref[len(prefix) :] if self.ref.startswith(prefix) else ""

    def _check(self) -> None:
        if not _SHA.match(self.sha):
            raise RecordError(f"PushEvent: sha {self.sha!r} is not a 40-character commit id")

    @classmethod
    def from_github(cls, payload: dict[str, Any], delivery_id: str) -> PushEvent:
        """Read GitHub's ``push`` webhook payload; :class:`RecordError` names what is missing."""
        try:
            repo = payload["repository"]
            owner = repo["owner"]
            installation = payload.get("installation") or {}
            return cls.from_json(
                {
                    "delivery_id": delivery_id,
                    "owner": owner.get("login") or owner.get("name"),
                    "owner_id": owner["id"],
                    "repo": repo["name"],
                    "full_name": repo["full_name"],
                    "clone_url": repo["clone_url"],
                    "html_url": repo["html_url"],
                    "private": bool(repo.get("private", False)),
                    "ref": payload["ref"],
                    "sha": payload["after"],
                    "before": payload.get("before", ""),
                    "default_branch": repo.get("default_branch") or "",
                    "installation_id": installation.get("id"),
                    "commits": len(payload.get("commits") or []),
                }
            )
        except (KeyError, TypeError) as exc:
            raise RecordError(f"push payload is missing {exc}") from None


@dataclass(frozen=True)
class GarbageRequest(_Record):
    """Remove the owner's functions of ``repo`` that are not in ``functions`` (``*``: every repo)."""

    owner: str
    repo: str
    functions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class CommitStatus(_Record):
    """One status to show on a commit: the whole stack (``stack-deploy``) or one function."""

    owner: str
    repo: str
    sha: str
    context: str
    state: str
    description: str
    installation_id: int | None = None
    target_url: str = ""
    log_url: str = ""

    def _check(self) -> None:
        if self.state not in STATES:
            raise RecordError(f"CommitStatus: state must be one of {', '.join(STATES)}")


@dataclass(frozen=True)
class PipelineLog(_Record):
    """A build log of one function at one commit."""

    owner: str
    repo: str
    sha: str
    function: str
    data: str
    source: str = "buildshiprun"


@dataclass(frozen=True)
class AuditEvent(_Record):
    """Something a stage did, for the audit trail."""

    source: str
    message: str
    owner: str = ""
    repo: str = ""


@dataclass(frozen=True)
class BuildResult(_Record):
    """The builder's answer to ``POST /build``."""

    log: list[str]
    image: str
    status: str
    duration: float = 0.0


@dataclass(frozen=True)
class BuildRequest(_Record):
    """One function of a pushed stack, from git-tar to buildshiprun.

    ``tar`` is the builder tar (``com.openfaas.docker.config`` + ``context/``), base64,
    so that the one ``X-Cloud-Signature`` over the JSON covers context and metadata
    alike. With ``skip_build`` the context is unchanged since the deployed ``image``
    was built from it (same ``context_digest``): deploy that image, build nothing.
    """

    push: dict[str, Any]  # a PushEvent's JSON
    function: str  # the key in stack.yml
    image: str
    context_digest: str
    tar: str = ""
    skip_build: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def push_event(self) -> PushEvent:
        return PushEvent.from_json(self.push)

    def _check(self) -> None:
        self.push_event  # noqa: B018 - validates the embedded push
        if not self.skip_build and not self.tar:
            raise RecordError("BuildRequest: tar is required unless skip_build is set")
