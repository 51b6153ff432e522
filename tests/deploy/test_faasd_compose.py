"""deploy/faasd: the services a faasd host runs beside the functions, as faasd reads them.

faasd loads its docker-compose.yaml with compose-go: ``services`` with ``image``,
``environment`` (a list of K=V), ``volumes`` (bind mounts, relative to /var/lib/faasd),
``ports``, ``user``, ``depends_on``. These tests read the file the same way and check
what the services need and that nothing listens beyond the host's loopback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ofc.secrets_gen import SECRETS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "faasd" / "docker-compose.yaml"
# The services faasd's own docker-compose.yaml defines, which ours may depend on.
FAASD_SERVICES = {"basic-auth-plugin", "nats", "prometheus", "gateway", "queue-worker"}


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert set(data) == {"services"}, "only services: they are appended to faasd's file"
    return data["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in service["environment"])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of each bind mount."""
    out = {}
    for v in service.get("volumes", []):
        assert v["type"] == "bind", v
        out[v["target"]] = v["source"]
    return out


def test_compose_names_router_auth_builder_and_registry(services: dict[str, Any]) -> None:
    assert set(services) == {"edge-router", "edge-auth", "builder", "registry"}
    for name, svc in services.items():
        assert svc["image"], name


def test_only_router_and_registry_are_published_and_only_on_loopback(
    services: dict[str, Any],
) -> None:
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert published == {
        "edge-router": ["127.0.0.1:8000:8000"],
        "registry": ["127.0.0.1:5000:5000"],
    }
    assert env(services["edge-router"])["OFC_ROUTER_PORT"] == "8000"


def test_services_listen_on_their_container_address_for_faasd_networking(
    services: dict[str, Any],
) -> None:
    # Each service has its own network namespace on faasd's bridge; 127.0.0.1 inside it
    # would be unreachable for the others. What keeps them private is the ports above.
    assert env(services["edge-router"])["OFC_ROUTER_HOST"] == "0.0.0.0"
    assert env(services["edge-auth"])["OFC_AUTH_HOST"] == "0.0.0.0"
    assert env(services["builder"])["OFC_BUILDER_HOST"] == "0.0.0.0"


def test_router_reaches_gateway_and_auth_by_faasd_service_name(services: dict[str, Any]) -> None:
    router = env(services["edge-router"])
    assert router["OFC_GATEWAY_URL"] == "http://gateway:8080"
    assert (
        router["OFC_AUTH_URL"] == f"http://edge-auth:{env(services['edge-auth'])['OFC_AUTH_PORT']}"
    )
    assert router["OFC_PUBLIC_SCHEME"] == "https" and router["OFC_PUBLIC_PORT"] == "443"
    assert router["OFC_DOMAIN"] == env(services["edge-auth"])["OFC_DOMAIN"]


def test_each_service_mounts_the_secret_files_it_reads(services: dict[str, Any]) -> None:
    router, auth, builder = (services[n] for n in ("edge-router", "edge-auth", "builder"))
    gateway_dir = env(router)["OFC_ROUTER_GATEWAY_SECRETS_DIR"]
    assert {f"{gateway_dir}/basic-auth-user", f"{gateway_dir}/basic-auth-password"} <= set(
        mounts(router)
    )
    auth_dir = env(auth)["OFC_AUTH_SECRETS_DIR"]
    assert {f"{auth_dir}/jwt-private-key", f"{auth_dir}/oauth-client-secret"} <= set(mounts(auth))
    assert env(builder)["OFC_PAYLOAD_SECRET_FILE"] in mounts(builder)
    # Sources are files `ofc secrets generate --dir ./ofc-secrets` writes.
    generated = {s.name for s in SECRETS}
    for svc in (router, auth, builder):
        for target, source in mounts(svc).items():
            if source.startswith("./ofc-secrets/"):
                assert source.rsplit("/", 1)[1] in generated
                assert target.rsplit("/", 1)[1] == source.rsplit("/", 1)[1]


def test_builder_drives_the_hosts_buildkitd_through_its_socket(services: dict[str, Any]) -> None:
    builder = services["builder"]
    assert env(builder)["OFC_BUILDER_BACKEND"] == "buildkit"
    addr = env(builder)["OFC_BUILDKIT_ADDR"]
    assert addr.startswith("unix://")
    socket_dir = str(Path(addr.removeprefix("unix://")).parent)
    assert mounts(builder)[socket_dir] == socket_dir
    assert env(builder)["OFC_BUILDCTL"] in mounts(builder)
    unit = (REPO / "deploy" / "faasd" / "buildkit.service").read_text()
    assert f"--addr {addr}" in unit
    assert f"--group {builder['user']}" in unit  # the builder's user may use the socket


def test_our_services_run_as_the_images_user(services: dict[str, Any]) -> None:
    for name in ("edge-router", "edge-auth", "builder"):
        assert services[name]["user"] == "10001", name


def test_dependencies_exist_in_this_file_or_faasds(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep in svc.get("depends_on", []):
            assert dep in services or dep in FAASD_SERVICES, f"{name} -> {dep}"


def test_bind_sources_stay_in_faasds_folder_or_are_the_buildkit_host_paths(
    services: dict[str, Any],
) -> None:
    for name, svc in services.items():
        for source in mounts(svc).values():
            assert source.startswith("./") or source in (
                "/run/buildkit",
                "/usr/local/bin/buildctl",
            ), (
                name,
                source,
            )
