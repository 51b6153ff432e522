"""OpenFaaS gateway wire records: FunctionDeployment, FunctionStatus and friends.

Field names on the wire follow faas-provider's Go types (camelCase); in Python they
are snake_case. ``from_json`` validates what a client sent and raises
:class:`RecordError` with a message naming the field, so the gateway can answer 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RecordError",
    "Resources",
    "FunctionDeployment",
    "FunctionStatus",
    "validate_name",
    "is_platform_function",
    "NAME_PATTERN",
]

# DNS-1123 label, as Kubernetes and faasd require for function names, secret names
# and namespaces: lower-case alphanumerics and '-', at most 63 characters.
NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class RecordError(ValueError):
    """A request body does not match the OpenFaaS schema; the message says which field."""


def validate_name(kind: str, value: object) -> str:
    """Return ``value`` if it is a valid DNS-1123 label, else raise :class:`RecordError`."""
    if not isinstance(value, str) or not value:
        raise RecordError(f"{kind} is required")
    if not NAME_PATTERN.match(value):
        raise RecordError(
            f"{kind} {value!r} is invalid: use at most 63 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _str_map(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RecordError(f"{key} must be an object of string values")
    return dict(value)


def _str_list(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"{key} must be a list of strings")
    return list(value)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"{key} must be a string")
    return value


@dataclass(frozen=True)
class Resources:
    """``limits`` / ``requests``: strings as OpenFaaS sends them (``128Mi``, ``100m``)."""

    memory: str = ""
    cpu: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any], key: str) -> Resources | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise RecordError(f"{key} must be an object with memory and cpu")
        return cls(memory=_str(value, "memory"), cpu=_str(value, "cpu"))

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("memory", self.memory), ("cpu", self.cpu)) if v}


@dataclass(frozen=True)
class FunctionDeployment:
    """One function as sent to ``POST/PUT /system/functions``."""

    service: str
    image: str
    namespace: str = ""
    env_process: str = ""
    env_vars: dict[str, str] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    limits: Resources | None = None
    requests: Resources | None = None
    read_only_root_filesystem: bool = False

    @classmethod
    def from_json(cls, body: object) -> FunctionDeployment:
        """Validate a decoded JSON body; raises :class:`RecordError` naming the bad field."""
        if not isinstance(body, dict):
            raise RecordError("body must be a JSON object")
        service = validate_name("service", body.get("service"))
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise RecordError("image is required")
        namespace = _str(body, "namespace")
        if namespace:
            validate_name("namespace", namespace)
        secrets = _str_list(body, "secrets")
        for secret in secrets:
            validate_name("secret name", secret)
        read_only = body.get("readOnlyRootFilesystem", False)
        if not isinstance(read_only, bool):
            raise RecordError("readOnlyRootFilesystem must be true or false")
        return cls(
            service=service,
            image=image.strip(),
            namespace=namespace,
            env_process=_str(body, "envProcess"),
            env_vars=_str_map(body, "envVars"),
            constraints=_str_list(body, "constraints"),
            secrets=secrets,
            labels=_str_map(body, "labels"),
            annotations=_str_map(body, "annotations"),
            limits=Resources.from_json(body, "limits"),
            requests=Resources.from_json(body, "requests"),
            read_only_root_filesystem=read_only,
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form; empty optional values are omitted as the Go types do."""
        out: dict[str, Any] = {"service": self.service, "image": self.image}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.env_process:
            out["envProcess"] = self.env_process
        if self.env_vars:
            out["envVars"] = dict(self.env_vars)
        if self.constraints:
            out["constraints"] = list(self.constraints)
        if self.secrets:
            out["secrets"] = list(self.secrets)
        out["labels"] = dict(self.labels)
        out["annotations"] = dict(self.annotations)
        if self.limits and self.limits.to_json():
            out["limits"] = self.limits.to_json()
        if self.requests and self.requests.to_json():
            out["requests"] = self.requests.to_json()
        if self.read_only_root_filesystem:
            out["readOnlyRootFilesystem"] = True
        return out


@dataclass(frozen=True)
class FunctionStatus:
    """A deployment plus what is running now, as ``GET /system/function(s)`` answers."""

    deployment: FunctionDeployment
    replicas: int
    available_replicas: int
    created_at: str  # RFC 3339
    invocation_count: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = self.deployment.to_json()
        out["name"] = out.pop("service")
        out["replicas"] = self.replicas
        out["availableReplicas"] = self.available_replicas
        out["invocationCount"] = self.invocation_count
        out["createdAt"] = self.created_at
        return out


def is_platform_function(labels: Mapping[str, Any] | None) -> bool:
    """Whether a function is one of the platform's own (root stack.yml marks them
    ``role: openfaas-system`` and ``openfaas-cloud: "1"``; either is enough): never a
    user's, never listed to users, reachable only by its explicit routes.

    >>> is_platform_function({"role": "openfaas-system"}), is_platform_function({"openfaas-cloud": "1"})
    (True, True)
    >>> is_platform_function({"com.openfaas.cloud.git-owner": "alice"}), is_platform_function(None)
    (False, False)
    """
    labels = labels or {}
    return labels.get("role") == "openfaas-system" or labels.get("openfaas-cloud") == "1"
