"""What a deployment becomes on a Docker engine: image reference, limits, container body.

Pure functions, no I/O: :func:`parse_image_reference` (the parts of a registry
reference a pull needs), :func:`parse_memory` and :func:`parse_cpu` (Kubernetes quantities as
OpenFaaS sends ``limits``: ``128Mi``, ``500m``), and :func:`container_body`, the
``POST /containers/create`` body for one replica.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from runtime.artifacts import normalize_image
from sdk.openfaas import FunctionDeployment

__all__ = [
    "ImageReference",
    "ReplicaLabels",
    "SECRETS_PATH",
    "LABEL_RUNTIME",
    "LABEL_FUNCTION",
    "LABEL_GENERATION",
    "LABEL_REPLICA",
    "MIN_MEMORY",
    "container_body",
    "parse_cpu",
    "parse_image_reference",
    "parse_memory",
]

SECRETS_PATH = "/var/openfaas/secrets"  # where OpenFaaS mounts a function's secrets
LABEL_RUNTIME = "com.openfaas-cloud.runtime"  # the runtime (state directory) that owns it
LABEL_FUNCTION = "com.openfaas.function"  # faasd's label for the function name
LABEL_GENERATION = "com.openfaas-cloud.generation"
LABEL_REPLICA = "com.openfaas-cloud.replica"
LABEL_IMAGE = "com.openfaas-cloud.image"  # the reference deployed (the container runs its ID)
ANNOTATION_PREFIX = "com.openfaas.annotations."  # faasd keeps annotations as labels too
MIN_MEMORY = 6 * 1024 * 1024  # Docker refuses a smaller memory limit
TMP_MOUNT = "rw,nosuid,nodev,mode=1777"  # /tmp on a read-only root filesystem


# -- image references ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageReference:
    """``127.0.0.1:5000/alice/repo-hello:main-0123456789ab`` as its parts."""

    name: str  # 127.0.0.1:5000/alice/repo-hello; "" for a bare image ID (sha256:...)
    tag: str  # "latest" when the reference has none; "" when only a digest pins it
    digest: str  # "sha256:..." when pinned, else ""

    @property
    def floating(self) -> bool:
        """True when the reference may name different images over time (``latest`` or no tag)."""
        return not self.digest and self.tag == "latest"

    @property
    def pull_tag(self) -> str:
        """The ``tag`` query parameter of ``POST /images/create`` (the digest when pinned)."""
        return self.digest or self.tag


def parse_image_reference(image: str) -> ImageReference:
    """Split a reference checked by :func:`runtime.artifacts.normalize_image` (Docker's
    grammar; ``ValueError`` saying what is wrong) into the parts a pull needs."""
    normalized = normalize_image(image)
    name, _, digest = normalized.partition("@")
    if name.startswith("sha256:"):
        return ImageReference(name="", tag="", digest=name)
    tag = ""
    colon = name.rfind(":")
    if colon > name.rfind("/"):  # an earlier colon is a registry's port
        name, tag = name[:colon], name[colon + 1 :]
    return ImageReference(name=name, tag=tag, digest=digest)


# -- quantities --------------------------------------------------------------------------------------
_QUANTITY = re.compile(
    r"^(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip


def _quantity(text: str, what: str) -> Decimal:
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(
            f"{what} {text!r} is not a quantity: use e.g. 128Mi, 1Gi, 500M (memory) or 500m, 0.5, 2 (cpu)"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    try:
        return number.scaleb(int(suffix[1:]))
    except (InvalidOperation, ValueError):  # pragma: no cover - the pattern admits only ints
        raise ValueError(f"{what} {text!r}: bad exponent") from None


def parse_memory(text: str) -> int:
    """Bytes in a Kubernetes memory quantity: ``parse_memory("128Mi") == 134217728``.

    Fractions of a byte round up; below :data:`MIN_MEMORY` (Docker's minimum) is refused.
    """
    value = int(_quantity(text, "memory").to_integral_value(rounding=ROUND_CEILING))
    if value < MIN_MEMORY:
        raise ValueError(f"memory {text!r} is below Docker's minimum of 6Mi")
    return value


def parse_cpu(text: str) -> int:
    """Nano-CPUs in a Kubernetes CPU quantity: ``parse_cpu("500m") == 500_000_000``.

    Docker's ``NanoCpus``; zero is refused (it would mean "no limit").
    """
    value = int((_quantity(text, "cpu") * 10**9).to_integral_value(rounding=ROUND_CEILING))
    if value <= 0:
        raise ValueError(f"cpu {text!r} must be more than 0")
    return value


# -- the container ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaLabels:
    """Who a container belongs to; also how the launcher finds its own after a crash."""

    runtime: str  # the runtime's id (its state directory's)
    function: str
    generation: int
    replica: str  # <function>-<generation>-<index>

    def to_json(self) -> dict[str, str]:
        return {
            LABEL_RUNTIME: self.runtime,
            LABEL_FUNCTION: self.function,
            LABEL_GENERATION: str(self.generation),
            LABEL_REPLICA: self.replica,
        }


def container_body(
    spec: FunctionDeployment,
    *,
    image_id: str,
    port: int,
    labels: ReplicaLabels,
    secrets_dir: Path,
) -> dict[str, Any]:
    """The ``POST /containers/create`` body for one replica of ``spec``.

    Host networking, listening on ``127.0.0.1:port`` (the template reads ``port`` and
    ``bind_address``); the deployment's environment with the platform's settings on
    top; its labels and annotations with ours on top; secrets read-only at
    :data:`SECRETS_PATH`; limits from ``spec.limits``; ``docker-init`` as PID 1 so
    SIGTERM reaches the server and zombies are reaped; no restart policy (the
    runtime's supervisor restarts, with back-off). ``spec`` must have been validated
    (:func:`parse_memory`, :func:`parse_cpu` raise on bad limits).
    """
    env = {
        **spec.env_vars,
        # Set by the platform, not overridable by the deployment:
        "port": str(port),
        "bind_address": "127.0.0.1",
        "HOSTNAME": labels.replica,
        "secret_mount_path": SECRETS_PATH,
    }
    if spec.env_process:
        env["fprocess"] = spec.env_process  # as faasd: read by a watchdog, if the image has one
    host_config: dict[str, Any] = {
        "NetworkMode": "host",
        "Init": True,
        "RestartPolicy": {"Name": "no"},
        "Binds": [f"{secrets_dir}:{SECRETS_PATH}:ro"],
        "ReadonlyRootfs": spec.read_only_root_filesystem,
        "SecurityOpt": ["no-new-privileges"],
        # The runtime reads the output as it comes; the engine's copy only needs to
        # bridge a restart of the runtime.
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "1"}},
    }
    if spec.read_only_root_filesystem:
        host_config["Tmpfs"] = {"/tmp": TMP_MOUNT}
    limits = spec.limits
    if limits is not None and limits.memory:
        memory = parse_memory(limits.memory)
        # Swap equal to memory: no swap on top of the limit, as on Kubernetes.
        host_config.update(Memory=memory, MemorySwap=memory)
    if limits is not None and limits.cpu:
        host_config["NanoCpus"] = parse_cpu(limits.cpu)
    annotations = {ANNOTATION_PREFIX + k: v for k, v in spec.annotations.items()}
    return {
        "Image": image_id,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": {**annotations, **spec.labels, LABEL_IMAGE: spec.image, **labels.to_json()},
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,  # keeps stdout and stderr apart in the multiplexed log stream
        "OpenStdin": False,
        "HostConfig": host_config,
    }
