"""Kubernetes manifests for the platform's services, rendered from a values file.

``ofc render`` reads ``deploy/kubernetes/values.yaml`` (every setting, with its
default), then the operator's values files, then ``--set key.path=value``, checks the
result, and writes plain manifests for ``kubectl apply -f``: the namespaces, the edge
router, edge-auth, the builder with its BuildKit daemon, the registry (when internal),
the Ingress with cert-manager TLS, and the NetworkPolicies. No template language: each
object is built here as data, so what is rendered is what the tests check against the
Kubernetes schemas.

The functions (the pipeline) are not here: ``faas-cli up -f stack.yml`` deploys them
through the gateway, as on any OpenFaaS.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sdk.config import ConfigError, parse_duration

__all__ = [
    "DEFAULT_VALUES",
    "Manifest",
    "ValuesError",
    "load_values",
    "render",
    "write_manifests",
]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VALUES = REPO / "deploy" / "kubernetes" / "values.yaml"
FORWARDER = REPO / "deploy" / "kubernetes" / "registry-forward.py"

# Maps whose keys are the operator's own: not checked against the defaults.
_FREE_MAPS = {("ingress", "annotations")}
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")

# Ports inside the pods (the Services keep OpenFaaS's names and ports).
ROUTER_PORT = 8000
AUTH_PORT = 8083
BUILDER_PORT = 8080
BUILDKIT_ADDR = "tcp://127.0.0.1:1234"  # in the builder pod only: never a Service
REGISTRY_PORT = 5000
APP_UID = 10001  # the images' user (template/python3-http, builder/Dockerfile)
SECRETS_PATH = "/var/openfaas/secrets"
PART_OF = "openfaas-cloud"


class ValuesError(ConfigError):
    """A values file or ``--set`` is malformed; the message names the key."""


@dataclass(frozen=True)
class Manifest:
    """One output file: a name such as ``20-edge-router.yaml`` and its objects."""

    name: str
    objects: tuple[dict[str, Any], ...]


# -- values -----------------------------------------------------------------------------------------
def load_values(files: Iterable[Path] = (), sets: Iterable[str] = ()) -> dict[str, Any]:
    """The defaults, then each file, then each ``key.path=value``; checked."""
    defaults = _read_yaml(DEFAULT_VALUES)
    values = copy.deepcopy(defaults)
    for path in files:
        _merge(values, _read_yaml(path), defaults, (), str(path))
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValuesError(f"--set {item!r}: expected key.path=value")
        try:
            parsed = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ValuesError(f"--set {key}: {raw!r} is not a YAML value: {problem}") from None
        tree: dict[str, Any] = {}
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
        _merge(values, tree, defaults, (), f"--set {key}")
    _check(values)
    return values


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValuesError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ValuesError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesError(f"{path}: expected a map of settings at the top")
    return data


def _merge(
    into: dict[str, Any], new: Mapping[str, Any], defaults: Any, path: tuple[str, ...], source: str
) -> None:
    for key, value in new.items():
        here = (*path, str(key))
        name = ".".join(here)
        if path in _FREE_MAPS:
            into[key] = value
            continue
        if not isinstance(defaults, dict) or key not in defaults:
            raise ValuesError(f"{source}: unknown setting {name!r} (see {DEFAULT_VALUES.name})")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ValuesError(f"{source}: {name} must be a map")
            _merge(into[key], value, defaults[key], here, source)
        else:
            into[key] = value


def _check(v: dict[str, Any]) -> None:
    domain = str(v["domain"] or "").lower().rstrip(".")
    if not domain:
        raise ValuesError("domain is required: --set domain=example.com")
    if not _DNS_NAME.match(domain) or domain.rsplit(".", 1)[-1].isdigit():
        raise ValuesError(f"domain={domain!r}: expected a DNS name such as example.com")
    v["domain"] = domain
    for key in ("core", "functions"):
        if not _DNS_LABEL.match(str(v["namespaces"][key])):
            raise ValuesError(f"namespaces.{key}={v['namespaces'][key]!r}: not a namespace name")
    if v["public"]["scheme"] not in ("http", "https"):
        raise ValuesError(f"public.scheme={v['public']['scheme']!r}: expected http or https")
    _int(v, "public.port", 1, 65535)
    _int(v, "router.replicas", 1, 100)
    _int(v, "auth.replicas", 1, 100)
    _int(v, "builder.replicas", 1, 100)
    _int(v, "builder.concurrency", 1, 256)
    for key in ("router.upstreamTimeout", "auth.tokenTtl", "builder.timeout"):
        try:
            parse_duration(str(_get(v, key)))
        except ValueError:
            raise ValuesError(
                f"{key}={_get(v, key)!r}: expected a duration such as 60s or 10m"
            ) from None
    if v["tls"]["issuerKind"] not in ("ClusterIssuer", "Issuer"):
        raise ValuesError(f"tls.issuerKind={v['tls']['issuerKind']!r}: ClusterIssuer or Issuer")
    mode = v["registry"]["mode"]
    if mode == "internal":
        _int(v, "registry.nodePort", 30000, 32767)
        v["registry"]["address"] = f"localhost:{v['registry']['nodePort']}"
    elif mode == "external":
        if not v["registry"]["address"]:
            raise ValuesError(
                "registry.address is required with registry.mode=external "
                "(e.g. ghcr.io/acme/ofc-fns); or --set registry.mode=internal"
            )
    else:
        raise ValuesError(f"registry.mode={mode!r}: expected external or internal")
    for key in (
        "router.resources",
        "auth.resources",
        "builder.resources",
        "builder.buildkit.resources",
        "registry.resources",
    ):
        for kind in ("requests", "limits"):
            for res, qty in (_get(v, key).get(kind) or {}).items():
                if not _QUANTITY.match(str(qty)):
                    raise ValuesError(f"{key}.{kind}.{res}={qty!r}: not a quantity such as 100m")
    for key in ("builder.buildkit.cacheSize", "registry.storage"):
        if not _QUANTITY.match(str(_get(v, key))):
            raise ValuesError(f"{key}={_get(v, key)!r}: not a quantity such as 20Gi")


def _get(v: Mapping[str, Any], dotted: str) -> Any:
    node: Any = v
    for part in dotted.split("."):
        node = node[part]
    return node


def _int(v: Mapping[str, Any], dotted: str, low: int, high: int) -> None:
    value = _get(v, dotted)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValuesError(f"{dotted}={value!r}: expected a whole number from {low} to {high}")


# -- building blocks --------------------------------------------------------------------------------
def _labels(name: str) -> dict[str, str]:
    return {"app": name, "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _meta(name: str, namespace: str | None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(name)}
    if namespace:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def _image(v: Mapping[str, Any], name: str, tag: str = "") -> str:
    return f"{v['images']['prefix'].rstrip('/')}/{name}:{tag or v['images']['tag']}"


def _env(pairs: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"name": k, "value": str(val)} for k, val in pairs.items()]


def _http_probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _restricted_container() -> dict[str, Any]:
    """The Pod Security "restricted" profile for one of our Python containers."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": APP_UID,
        "runAsGroup": APP_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_spec(
    v: Mapping[str, Any], containers: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        # Our services never call the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": {"fsGroup": APP_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": containers,
    }
    if v["images"]["pullSecrets"]:
        spec["imagePullSecrets"] = [{"name": n} for n in v["images"]["pullSecrets"]]
    spec.update(extra)
    return spec


def _deployment(
    v: Mapping[str, Any], name: str, replicas: int, pod: dict[str, Any], **strategy: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": _labels(name)}, "spec": pod},
    }
    if strategy:
        spec["strategy"] = strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, v["namespaces"]["core"]),
        "spec": spec,
    }


def _service(
    v: Mapping[str, Any], name: str, port: int, target: int, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, v["namespaces"]["core"]),
        "spec": {
            "selector": {"app": spec.pop("app", name)},
            "ports": [{"name": "http", "port": port, "targetPort": target, "protocol": "TCP"}],
            **spec,
        },
    }


def _tmp_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}, {"name": "tmp", "mountPath": "/tmp"}


# -- the objects ------------------------------------------------------------------------------------
def namespaces(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The two namespaces OpenFaaS uses, labelled as the original's policies expect."""
    out = []
    for key, role in (("core", "openfaas-system"), ("functions", "openfaas-fn")):
        name = v["namespaces"][key]
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": name,
                    "labels": {"role": role, "app.kubernetes.io/part-of": PART_OF},
                },
            }
        )
    return out


def edge_router(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The router: every public request enters here (``router/``)."""
    core = v["namespaces"]["core"]
    tmp_volume, tmp_mount = _tmp_volume()
    container = {
        "name": "edge-router",
        "image": _image(v, "edge-router"),
        "imagePullPolicy": v["images"]["pullPolicy"],
        "command": ["python", "-m", "router"],
        "ports": [{"name": "http", "containerPort": ROUTER_PORT}],
        "env": _env(
            {
                "OFC_ROUTER_HOST": "0.0.0.0",
                "OFC_ROUTER_PORT": ROUTER_PORT,
                "OFC_DOMAIN": v["domain"],
                "OFC_PUBLIC_SCHEME": v["public"]["scheme"],
                "OFC_PUBLIC_PORT": v["public"]["port"],
                "OFC_GATEWAY_URL": v["gateway"]["url"],
                "OFC_AUTH_URL": f"http://edge-auth.{core}:{AUTH_PORT}",
                "OFC_ROUTER_GATEWAY_SECRETS_DIR": f"{SECRETS_PATH}/gateway",
                "OFC_ROUTER_UPSTREAM_TIMEOUT": v["router"]["upstreamTimeout"],
                "OFC_STATE_DIR": "/tmp/ofc",
            }
        ),
        "resources": v["router"]["resources"],
        "readinessProbe": _http_probe("/healthz", ROUTER_PORT, period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", ROUTER_PORT, period=10, failures=3),
        "securityContext": _restricted_container(),
        "volumeMounts": [
            {"name": "gateway-auth", "mountPath": f"{SECRETS_PATH}/gateway", "readOnly": True},
            tmp_mount,
        ],
    }
    pod = _pod_spec(
        v,
        [container],
        volumes=[
            {
                "name": "gateway-auth",
                # The gateway's own credentials: the router lists functions with them.
                "secret": {"secretName": v["gateway"]["basicAuthSecret"], "defaultMode": 0o440},
            },
            tmp_volume,
        ],
    )
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    out = [
        _deployment(v, "edge-router", v["router"]["replicas"], pod, **rolling),
        _service(v, "edge-router", 8080, ROUTER_PORT),
    ]
    if v["router"]["replicas"] > 1:
        # A node drain takes one router at a time: every request has somewhere to go.
        out.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _meta("edge-router", core),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "edge-router"}}},
            }
        )
    return out


def edge_auth(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """edge-auth: GitHub sign-in and the session token (``auth/``)."""
    tmp_volume, tmp_mount = _tmp_volume()
    env = {
        "OFC_AUTH_HOST": "0.0.0.0",
        "OFC_AUTH_PORT": AUTH_PORT,
        "OFC_DOMAIN": v["domain"],
        "OFC_PUBLIC_SCHEME": v["public"]["scheme"],
        "OFC_PUBLIC_PORT": v["public"]["port"],
        "OFC_OAUTH_CLIENT_ID": v["auth"]["oauthClientId"],
        "OFC_AUTH_SECRETS_DIR": SECRETS_PATH,
        "OFC_AUTH_TOKEN_TTL": v["auth"]["tokenTtl"],
        "OFC_STATE_DIR": "/tmp/ofc",
    }
    if v["auth"]["customersUrl"]:
        env["customers_url"] = v["auth"]["customersUrl"]
    container = {
        "name": "edge-auth",
        "image": _image(v, "edge-auth"),
        "imagePullPolicy": v["images"]["pullPolicy"],
        "command": ["python", "-m", "auth"],
        "ports": [{"name": "http", "containerPort": AUTH_PORT}],
        "env": _env(env),
        "resources": v["auth"]["resources"],
        "readinessProbe": _http_probe("/healthz", AUTH_PORT, period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", AUTH_PORT, period=10, failures=3),
        "securityContext": _restricted_container(),
        "volumeMounts": [
            {"name": "secrets", "mountPath": SECRETS_PATH, "readOnly": True},
            tmp_mount,
        ],
    }
    # One folder with the three files, each from the Secret of the same name (as
    # `ofc secrets generate` prints them); the client secret may come later.
    sources = [
        {"secret": {"name": name, "items": [{"key": name, "path": name}], "optional": optional}}
        for name, optional in (
            ("jwt-private-key", False),
            ("jwt-public-key", False),
            ("oauth-client-secret", True),
        )
    ]
    pod = _pod_spec(
        v,
        [container],
        volumes=[
            {"name": "secrets", "projected": {"sources": sources, "defaultMode": 0o440}},
            tmp_volume,
        ],
    )
    return [
        _deployment(v, "edge-auth", v["auth"]["replicas"], pod),
        _service(v, "edge-auth", AUTH_PORT, AUTH_PORT),
    ]


def buildkitd_config(v: Mapping[str, Any]) -> str:
    """buildkitd.toml: plain HTTP only for the internal registry's loopback address."""
    lines = [
        "# Rendered by `ofc render` (deploy/kubernetes/values.yaml).",
        "[worker.oci]",
        "  enabled = true",
        "[worker.containerd]",
        "  enabled = false",
    ]
    if v["registry"]["mode"] == "internal":
        lines += [f'[registry."{v["registry"]["address"]}"]', "  http = true"]
    return "\n".join(lines) + "\n"


def builder(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The builder (``python -m builder``, buildkit backend) beside its own buildkitd.

    BuildKit listens on the pod's loopback only and is never a Service: only this
    builder, which checks every request's signature, can start a build. ``buildctl``
    is copied from the BuildKit image by an init container, so client and daemon are
    always the same version and the builder image needs nothing from Docker Hub.
    """
    b = v["builder"]
    bk = b["buildkit"]
    internal = v["registry"]["mode"] == "internal"
    tmp_volume, tmp_mount = _tmp_volume()
    env = {
        "OFC_BUILDER_HOST": "0.0.0.0",
        "OFC_BUILDER_PORT": BUILDER_PORT,
        "OFC_BUILDER_BACKEND": "buildkit",
        "OFC_BUILDKIT_ADDR": BUILDKIT_ADDR,
        "OFC_BUILDCTL": "/opt/buildkit/bin/buildctl",
        "OFC_BUILDER_CONCURRENCY": b["concurrency"],
        "OFC_BUILDER_TIMEOUT": b["timeout"],
        "OFC_BUILDER_BASE_IMAGE": b["baseImage"] or _image(v, "python3-base", "bookworm"),
        "OFC_PAYLOAD_SECRET_FILE": f"{SECRETS_PATH}/payload-secret",
        "OFC_STATE_DIR": "/home/app/state",
        "HOME": "/home/app/state",
    }
    mounts = [
        {"name": "payload-secret", "mountPath": SECRETS_PATH, "readOnly": True},
        {"name": "buildctl", "mountPath": "/opt/buildkit/bin", "readOnly": True},
        {"name": "state", "mountPath": "/home/app/state"},
        tmp_mount,
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "payload-secret",
            "secret": {
                "secretName": "payload-secret",
                "items": [{"key": "payload-secret", "path": "payload-secret"}],
                "defaultMode": 0o440,
            },
        },
        {"name": "buildctl", "emptyDir": {"sizeLimit": "128Mi"}},
        {"name": "state", "emptyDir": {"sizeLimit": "4Gi"}},
        {"name": "buildkitd-config", "configMap": {"name": "buildkitd-config"}},
        {"name": "buildkit-cache", "emptyDir": {"sizeLimit": bk["cacheSize"]}},
        tmp_volume,
    ]
    if b["registrySecret"]:
        env["DOCKER_CONFIG"] = "/home/app/docker"
        mounts.append({"name": "registry-auth", "mountPath": "/home/app/docker", "readOnly": True})
        volumes.append(
            {
                "name": "registry-auth",
                "secret": {
                    "secretName": b["registrySecret"],
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                    "defaultMode": 0o440,
                },
            }
        )
    builder_container = {
        "name": "builder",
        "image": _image(v, "builder"),
        "imagePullPolicy": v["images"]["pullPolicy"],
        "command": ["python", "-m", "builder"],
        "ports": [{"name": "http", "containerPort": BUILDER_PORT}],
        "env": _env(env),
        "resources": b["resources"],
        "readinessProbe": _http_probe("/healthz", BUILDER_PORT, period=5, failures=2),
        "livenessProbe": _http_probe("/healthz", BUILDER_PORT, period=10, failures=3),
        "securityContext": _restricted_container(),
        "volumeMounts": mounts,
    }
    buildctl_check = {
        "exec": {"command": ["buildctl", "--addr", BUILDKIT_ADDR, "debug", "workers"]},
        "periodSeconds": 30,
        "timeoutSeconds": 10,
        "failureThreshold": 3,
    }
    if bk["rootless"]:
        image = bk["image"]
        state_dir = "/home/user/.local/share/buildkit"
        args = ["--addr", BUILDKIT_ADDR, "--oci-worker-no-process-sandbox"]
        security: dict[str, Any] = {
            # rootlesskit makes its user namespace; these profiles would forbid it.
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
            "runAsUser": 1000,
            "runAsGroup": 1000,
        }
    else:
        image = bk["rootfulImage"]
        state_dir = "/var/lib/buildkit"
        args = ["--addr", BUILDKIT_ADDR]
        security = {"privileged": True}
    buildkitd = {
        "name": "buildkitd",
        "image": image,
        "args": [*args, "--config", "/etc/buildkit/buildkitd.toml"],
        "resources": bk["resources"],
        "readinessProbe": {**buildctl_check, "periodSeconds": 5, "initialDelaySeconds": 2},
        "livenessProbe": {**buildctl_check, "initialDelaySeconds": 10},
        "securityContext": security,
        "volumeMounts": [
            {"name": "buildkitd-config", "mountPath": "/etc/buildkit", "readOnly": True},
            {"name": "buildkit-cache", "mountPath": state_dir},
        ],
    }
    init = {
        "name": "buildctl",
        "image": image,
        "command": ["cp", "/usr/bin/buildctl", "/opt/buildkit/bin/buildctl"],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "buildctl", "mountPath": "/opt/buildkit/bin"}],
    }
    containers = [builder_container, buildkitd]
    if internal:
        containers.append(_forwarder(v))
        volumes.append({"name": "registry-forward", "configMap": {"name": "registry-forward"}})
    pod = _pod_spec(v, containers, initContainers=[init], volumes=volumes)
    # Builds in flight are not moved: a new pod starts before the old one goes, and the
    # old one gets the build timeout to finish.
    pod["terminationGracePeriodSeconds"] = int(parse_duration(str(b["timeout"]))) + 30
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("buildkitd-config", v["namespaces"]["core"]),
        "data": {"buildkitd.toml": buildkitd_config(v)},
    }
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    return [
        config_map,
        _deployment(v, "of-builder", b["replicas"], pod, **rolling),
        # OpenFaaS's name and port for it: stack.yml's BUILDER_URL default.
        _service(v, "of-builder", 8080, BUILDER_PORT),
    ]


def _forwarder(v: Mapping[str, Any]) -> dict[str, Any]:
    port = v["registry"]["nodePort"]
    # It listens on the pod's loopback only, which a tcpSocket probe (to the pod IP)
    # cannot reach: the probe connects from inside instead.
    connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), 2).close()"
    probe = {"exec": {"command": ["python", "-c", connect]}, "timeoutSeconds": 5}
    return {
        "name": "registry-forward",
        "image": _image(v, "builder"),
        "imagePullPolicy": v["images"]["pullPolicy"],
        "command": ["python", "/etc/ofc/registry-forward.py"],
        "env": _env(
            {
                "OFC_FORWARD_LISTEN": f"127.0.0.1:{port}",
                "OFC_FORWARD_TARGET": f"registry.{v['namespaces']['core']}:{REGISTRY_PORT}",
            }
        ),
        "resources": {
            "requests": {"cpu": "20m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
        "readinessProbe": {**probe, "periodSeconds": 10},
        "livenessProbe": {**probe, "periodSeconds": 20},
        "securityContext": _restricted_container(),
        "volumeMounts": [{"name": "registry-forward", "mountPath": "/etc/ofc", "readOnly": True}],
    }


def registry(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The internal registry: storage, a Service for the builder, a NodePort for nodes."""
    r = v["registry"]
    core = v["namespaces"]["core"]
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta("registry", core),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": r["storage"]}},
        },
    }
    if r["storageClassName"]:
        claim["spec"]["storageClassName"] = r["storageClassName"]
    container = {
        "name": "registry",
        "image": r["image"],
        "ports": [{"name": "http", "containerPort": REGISTRY_PORT}],
        "env": _env(
            {
                "REGISTRY_HTTP_ADDR": f"0.0.0.0:{REGISTRY_PORT}",
                # garbage-collect deletes old tags.
                "REGISTRY_STORAGE_DELETE_ENABLED": "true",
            }
        ),
        "resources": r["resources"],
        "readinessProbe": _http_probe("/", REGISTRY_PORT, period=5, failures=2),
        "livenessProbe": _http_probe("/", REGISTRY_PORT, period=15, failures=3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": APP_UID,
            "runAsGroup": APP_UID,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/registry"}],
    }
    pod = _pod_spec(
        v,
        [container],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "registry"}}],
    )
    # One writer on a ReadWriteOnce volume: the old pod stops before the new one starts.
    deployment = _deployment(v, "registry", 1, pod, type="Recreate")
    forward = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("registry-forward", core),
        "data": {"registry-forward.py": FORWARDER.read_text(encoding="utf-8")},
    }
    return [
        claim,
        deployment,
        _service(v, "registry", REGISTRY_PORT, REGISTRY_PORT),
        _service(
            v,
            "registry-node",
            REGISTRY_PORT,
            REGISTRY_PORT,
            app="registry",
            type="NodePort",
            ports=[
                {
                    "name": "http",
                    "port": REGISTRY_PORT,
                    "targetPort": REGISTRY_PORT,
                    "nodePort": r["nodePort"],
                    "protocol": "TCP",
                }
            ],
        ),
        forward,
    ]


def ingress(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Ingress: ``*.<domain>``, ``system.<domain>``, ``auth.system.<domain>`` → router.

    The wildcard covers one label only, so ``auth.system.<domain>`` is listed on its
    own; the router tells them apart by Host.
    """
    d = v["domain"]
    hosts = [f"*.{d}", f"system.{d}", f"auth.system.{d}"]
    backend = {"service": {"name": "edge-router", "port": {"number": 8080}}}
    annotations = dict(v["ingress"]["annotations"])
    spec: dict[str, Any] = {
        "ingressClassName": v["ingress"]["className"],
        "rules": [
            {
                "host": h,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
            for h in hosts
        ],
    }
    if v["tls"]["enabled"]:
        kind = v["tls"]["issuerKind"]
        key = (
            "cert-manager.io/cluster-issuer"
            if kind == "ClusterIssuer"
            else "cert-manager.io/issuer"
        )
        annotations[key] = v["tls"]["issuer"]
        spec["tls"] = [{"hosts": hosts, "secretName": v["tls"]["secretName"]}]
    meta = _meta("ofc-edge", v["namespaces"]["core"])
    if annotations:
        meta["annotations"] = annotations
    return [
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}
    ]


def network_policies(v: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Who may connect to whom. User functions reach nothing of the platform's.

    * core namespace (gateway, router, edge-auth, builder, registry, NATS...): from
      itself, from the platform's own functions (label ``role: openfaas-system``, which
      faas-netes copies from stack.yml to the pods), and from the ingress controller.
    * functions namespace: only from the core namespace (the gateway calls them), so one
      function cannot call another directly, nor a user's function a platform one.
    """
    core, fns = v["namespaces"]["core"], v["namespaces"]["functions"]

    def ns(name: str) -> dict[str, Any]:
        return {"matchLabels": {"kubernetes.io/metadata.name": name}}

    core_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("ofc-core-ingress", core),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"namespaceSelector": ns(core)}]},
                {
                    "from": [
                        {
                            "namespaceSelector": ns(fns),
                            "podSelector": {"matchLabels": {"role": "openfaas-system"}},
                        }
                    ]
                },
                {
                    "from": [{"namespaceSelector": ns(v["ingress"]["controllerNamespace"])}],
                    "ports": [{"protocol": "TCP", "port": ROUTER_PORT}],
                },
            ],
        },
    }
    fn_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta("ofc-functions-ingress", fns),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": ns(core)}]}],
        },
    }
    return [core_policy, fn_policy]


def render(v: Mapping[str, Any]) -> list[Manifest]:
    """Every object for the values ``v`` (from :func:`load_values`), grouped in files."""
    out = [
        Manifest("00-namespaces.yaml", tuple(namespaces(v))),
        Manifest("10-edge-router.yaml", tuple(edge_router(v))),
        Manifest("20-edge-auth.yaml", tuple(edge_auth(v))),
        Manifest("30-builder.yaml", tuple(builder(v))),
    ]
    if v["registry"]["mode"] == "internal":
        out.append(Manifest("40-registry.yaml", tuple(registry(v))))
    out.append(Manifest("50-ingress.yaml", tuple(ingress(v))))
    if v["networkPolicies"]["enabled"]:
        out.append(Manifest("60-network-policies.yaml", tuple(network_policies(v))))
    return out


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (a config file, a script) as ``|`` blocks, readable in review;
    no ``&id001`` anchors for objects built once and used twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, keys in the order they were built."""
    return "".join(
        "---\n" + yaml.dump(dict(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
        for obj in objects
    )


def write_manifests(manifests: Iterable[Manifest], out: Path) -> list[Path]:
    """Write each manifest file into ``out`` (created); files of ours left over are removed."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for m in manifests:
        path = out / m.name
        path.write_text(to_yaml(m.objects), encoding="utf-8")
        written.append(path)
    # A file from an earlier render that this one no longer has (registry switched to
    # external): kubectl apply -f would otherwise keep applying it.
    for stale in out.glob("[0-9][0-9]-*.yaml"):
        if stale not in written:
            stale.unlink()
    return written


# -- command line (registered by ofc/cli.py) -----------------------------------------------------
def add_cli(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``ofc render`` on the CLI's subcommand parser."""
    p = sub.add_parser(
        "render",
        help="Kubernetes manifests for the router, edge-auth, builder, registry, Ingress",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("-f", "--values", action="append", default=[], help="a values file (repeatable)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="one setting (repeatable)"
    )
    p.add_argument("-o", "--output", help="write one file per component here (default: stdout)")
    p.set_defaults(func=_cmd_render)


def _cmd_render(args: argparse.Namespace) -> int:
    from .local import CliError

    try:
        values = load_values([Path(f) for f in args.values], args.set)
    except ValuesError as exc:
        raise CliError(str(exc)) from None
    manifests = render(values)
    if args.output:
        for path in write_manifests(manifests, Path(args.output)):
            print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(to_yaml(obj for m in manifests for obj in m.objects))
    return 0
