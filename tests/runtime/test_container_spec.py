"""What a deployment becomes on a Docker engine: image references, limits, the container body.

Pure functions (runtime/providers/container_spec.py), no engine needed; the container
tests (test_docker_provider.py) check that the engine applies them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.providers.container_spec import (
    SECRETS_PATH,
    ImageReference,
    ReplicaLabels,
    container_body,
    parse_cpu,
    parse_image_reference,
    parse_memory,
)
from sdk.openfaas import FunctionDeployment, Resources

DIGEST = "sha256:" + "0123456789abcdef" * 4


# -- image references --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "127.0.0.1:5000/alice/repo-hello:main-0123456789ab",
            ImageReference("127.0.0.1:5000/alice/repo-hello", "main-0123456789ab", ""),
        ),
        ("hello", ImageReference("hello", "latest", "")),
        ("localhost:5000/hello", ImageReference("localhost:5000/hello", "latest", "")),
        (f"registry.example/fn@{DIGEST}", ImageReference("registry.example/fn", "", DIGEST)),
        (f"fn:v1@{DIGEST}", ImageReference("fn", "v1", DIGEST)),
        (DIGEST, ImageReference("", "", DIGEST)),
    ],
    ids=["registry-port-tag", "no-tag-is-latest", "registry-port-no-tag", "digest",
         "tag-and-digest", "image-id"],
)  # fmt: skip
def test_parse_image_reference_splits_what_a_pull_needs(
    image: str, expected: ImageReference
) -> None:
    assert parse_image_reference(image) == expected


@pytest.mark.parametrize("image", ["Alice/Hello:1", "alice/hello:", "alice//hello"])
def test_parse_image_reference_refuses_what_docker_would(image: str) -> None:
    with pytest.raises(ValueError, match="image reference"):
        parse_image_reference(image)


@pytest.mark.parametrize(
    ("image", "floating", "pull_tag"),
    [("fn", True, "latest"), ("fn:latest", True, "latest"), ("fn:1", False, "1"),
     (f"fn:latest@{DIGEST}", False, DIGEST)],
    ids=["no-tag", "latest", "fixed-tag", "digest"],
)  # fmt: skip
def test_image_reference_floats_only_without_tag_or_with_latest(
    image: str, floating: bool, pull_tag: str
) -> None:
    ref = parse_image_reference(image)
    assert (ref.floating, ref.pull_tag) == (floating, pull_tag)


# -- quantities ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [("128Mi", 128 * 2**20), ("1Gi", 2**30), ("0.5Gi", 2**29), ("500M", 500_000_000),
     ("134217728", 134217728), ("129e6", 129_000_000), ("64Mi ", 64 * 2**20),
     ("6291456.5", 6291457)],
    ids=["Mi", "Gi", "fraction-Gi", "decimal-M", "plain-bytes", "exponent", "whitespace",
         "fraction-rounds-up"],
)  # fmt: skip
def test_parse_memory_reads_kubernetes_quantities_as_bytes(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("lots", "not a quantity"), ("128MB", "not a quantity"), ("-1Gi", "not a quantity"),
     ("4Mi", "below Docker's minimum"), ("", "not a quantity")],
    ids=["word", "MB-suffix", "negative", "below-minimum", "empty"],
)  # fmt: skip
def test_parse_memory_refuses_bad_quantities(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500m", 500_000_000), ("0.5", 500_000_000), ("2", 2_000_000_000), ("1.25", 1_250_000_000),
     ("100u", 100_000), ("1n", 1)],
    ids=["millicores", "fraction", "whole", "decimal", "micro", "nano"],
)  # fmt: skip
def test_parse_cpu_reads_kubernetes_quantities_as_nano_cpus(text: str, expected: int) -> None:
    assert parse_cpu(text) == expected


@pytest.mark.parametrize(("text", "message"), [("0", "more than 0"), ("half", "not a quantity")])
def test_parse_cpu_refuses_zero_and_words(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_cpu(text)


# -- container body ----------------------------------------------------------------------------------
LABELS = ReplicaLabels(runtime="rt1", function="hello", generation=3, replica="hello-3-0")


def body_for(
    spec: FunctionDeployment, secrets_dir: Path = Path("/state/run/hello/3/secrets")
) -> dict:
    return container_body(
        spec, image_id="sha256:abc", port=40123, labels=LABELS, secrets_dir=secrets_dir
    )


def env_of(body: dict) -> dict[str, str]:
    return dict(item.split("=", 1) for item in body["Env"])


def test_container_body_runs_the_pinned_image_on_host_network_with_init_and_no_restart() -> None:
    body = body_for(FunctionDeployment(service="hello", image="127.0.0.1:5000/a/hello:1"))

    host = body["HostConfig"]
    assert body["Image"] == "sha256:abc"
    assert (host["NetworkMode"], host["Init"], host["RestartPolicy"]) == (
        "host",
        True,
        {"Name": "no"},
    )
    assert body["Tty"] is False
    assert host["Binds"] == [f"/state/run/hello/3/secrets:{SECRETS_PATH}:ro"]
    assert host["ReadonlyRootfs"] is False and "Tmpfs" not in host
    assert "Memory" not in host and "NanoCpus" not in host


def test_container_body_environment_has_deployment_vars_under_platform_settings() -> None:
    spec = FunctionDeployment(
        service="hello",
        image="hello:1",
        env_process="python index.py",
        env_vars={"GREETING": "hi", "port": "1", "bind_address": "0.0.0.0", "HOSTNAME": "x"},
    )

    env = env_of(body_for(spec))

    assert env == {
        "GREETING": "hi",
        "port": "40123",
        "bind_address": "127.0.0.1",
        "HOSTNAME": "hello-3-0",
        "secret_mount_path": SECRETS_PATH,
        "fprocess": "python index.py",
    }


def test_container_body_without_env_process_sets_no_fprocess() -> None:
    assert "fprocess" not in env_of(body_for(FunctionDeployment(service="hello", image="hello:1")))


def test_container_body_labels_are_the_deployments_plus_ours_which_cannot_be_overridden() -> None:
    spec = FunctionDeployment(
        service="hello",
        image="hello:1",
        labels={"com.openfaas.scale.min": "2", "com.openfaas-cloud.runtime": "forged"},
        annotations={"topic": "orders"},
    )

    labels = body_for(spec)["Labels"]

    assert labels == {
        "com.openfaas.scale.min": "2",
        "com.openfaas.annotations.topic": "orders",
        "com.openfaas-cloud.image": "hello:1",
        "com.openfaas-cloud.runtime": "rt1",
        "com.openfaas.function": "hello",
        "com.openfaas-cloud.generation": "3",
        "com.openfaas-cloud.replica": "hello-3-0",
    }


def test_container_body_read_only_root_filesystem_gets_a_writable_tmp() -> None:
    spec = FunctionDeployment(service="hello", image="hello:1", read_only_root_filesystem=True)

    host = body_for(spec)["HostConfig"]

    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,mode=1777"}


def test_container_body_limits_become_memory_without_extra_swap_and_nano_cpus() -> None:
    spec = FunctionDeployment(
        service="hello", image="hello:1", limits=Resources(memory="128Mi", cpu="500m")
    )

    host = body_for(spec)["HostConfig"]

    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (
        134217728,
        134217728,
        500_000_000,
    )
