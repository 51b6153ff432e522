"""The router, edge-auth and builder images: built from their Dockerfiles on the local base
image, then started the way ``ofc render``'s manifests start them, and asked /healthz.

Each container gets the environment of its container in the rendered Deployment (only the
listen address is moved to a free loopback port, and in-cluster upstreams to loopback
ports nobody listens on), the secret files at the paths the Deployment mounts them, the
manifest's user (10001) and a read-only root filesystem with the same writable folders.
So a manifest that names a variable the service rejects, a secret path it does not read,
or an image that cannot run read-only fails here, not in a cluster.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ofc.manifests import load_values, render
from ofc.secrets_gen import generate
from tests.containers import Engine
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.containers

REPO = Path(__file__).resolve().parents[2]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUN_ID = uuid.uuid4().hex[:10]
LABEL = f"ofc.test.deploy={RUN_ID}"
# service folder -> (Deployment, container) in the rendered manifests, and listen variables
SERVICES = {
    "router": ("edge-router", "edge-router", "OFC_ROUTER_HOST", "OFC_ROUTER_PORT"),
    "auth": ("edge-auth", "edge-auth", "OFC_AUTH_HOST", "OFC_AUTH_PORT"),
    "builder": ("of-builder", "builder", "OFC_BUILDER_HOST", "OFC_BUILDER_PORT"),
}
# Upstreams a service would call in a cluster: loopback ports nobody listens on here.
UPSTREAMS = ("OFC_GATEWAY_URL", "OFC_AUTH_URL")


def rendered_pod(deployment: str) -> dict[str, Any]:
    values = load_values(sets=["domain=cloud.example.com", "registry.address=ghcr.io/acme/fns"])
    for manifest in render(values):
        for obj in manifest.objects:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == deployment:
                return obj["spec"]["template"]["spec"]
    raise AssertionError(f"no Deployment {deployment}")


@pytest.fixture(scope="module")
def images(engine: Engine) -> Iterator[dict[str, str]]:
    """Build each service image once for the module; removed afterwards."""
    built: dict[str, str] = {}
    yield built
    for tag in built.values():
        engine.docker("rmi", "-f", tag, check=False)


def build(engine: Engine, images: dict[str, str], folder: str) -> str:
    if folder in images:
        return images[folder]
    dockerfile = REPO / folder / "Dockerfile"
    if not dockerfile.is_file():
        pytest.fail(f"{folder}/Dockerfile does not exist")
    tag = f"ofc-deploy-test/{folder}:{RUN_ID}"
    args = ["build", "--network", "host", "--progress", "plain", "--label", LABEL]
    if CA_BUNDLE.is_file():  # pip behind a TLS-intercepting proxy
        args += ["--secret", f"id=ca-certificates,src={CA_BUNDLE}"]
    args += ["--build-arg", f"BASE_IMAGE={engine.base_image}", "-f", str(dockerfile), "-t", tag]
    done = engine.docker(*args, str(REPO), check=False, timeout=600)
    assert done.returncode == 0, f"building {folder} failed:\n{done.stderr[-4000:]}"
    images[folder] = tag
    return tag


def container_spec(
    folder: str, port: int, secrets_dir: Path, tmp: Path
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``docker run`` mount arguments (by mount path) and environment, from the Deployment."""
    deployment, name, host_var, port_var = SERVICES[folder]
    spec = rendered_pod(deployment)
    container = next(c for c in spec["containers"] if c["name"] == name)
    env = {e["name"]: e["value"] for e in container["env"]}
    env[host_var], env[port_var] = "127.0.0.1", str(port)
    for var in UPSTREAMS:
        if var in env:
            env[var] = f"http://127.0.0.1:{free_port()}"
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts: dict[str, list[str]] = {}
    for m in container["volumeMounts"]:
        vol = volumes[m["name"]]
        if "emptyDir" in vol:
            # Writable and owned by the service's user, as fsGroup makes an emptyDir.
            mounts[m["mountPath"]] = ["--tmpfs", f"{m['mountPath']}:uid=10001,gid=10001,mode=0770"]
            continue
        if "secret" in vol:
            keys = [i["path"] for i in vol["secret"].get("items", [])] or [
                "basic-auth-user",
                "basic-auth-password",
            ]
        elif "projected" in vol:
            keys = [s["secret"]["name"] for s in vol["projected"]["sources"]]
        else:
            raise AssertionError(f"unexpected volume {vol}")
        folder_for_mount = tmp / "volumes" / m["name"]
        folder_for_mount.mkdir(parents=True)
        for key in keys:
            if (secrets_dir / key).exists():
                shutil.copy(secrets_dir / key, folder_for_mount / key)
        mounts[m["mountPath"]] = ["-v", f"{folder_for_mount}:{m['mountPath']}:ro"]
    return mounts, env


def stub_buildctl(tmp: Path) -> Path:
    """A buildctl that only answers --version: the builder checks it at start."""
    path = tmp / "buildctl-bin"
    path.mkdir()
    (path / "buildctl").write_text('#!/bin/sh\necho "buildctl github.com/moby/buildkit v0.17.3"\n')
    os.chmod(path / "buildctl", 0o755)
    return path


@pytest.mark.parametrize("folder", list(SERVICES))
def test_image_builds_and_serves_healthz_as_the_manifest_runs_it(
    engine: Engine, images: dict[str, str], folder: str, tmp_path: Path
) -> None:
    tag = build(engine, images, folder)
    secrets_dir = tmp_path / "secrets"
    generate(secrets_dir)
    # The files are mounted into a container running as uid 10001.
    os.chmod(tmp_path, 0o755)
    for path in secrets_dir.iterdir():
        os.chmod(path, 0o644)
    port = free_port()
    mounts, env = container_spec(folder, port, secrets_dir, tmp_path)
    if folder == "builder":
        buildctl = stub_buildctl(tmp_path)
        # In the pod an init container copies buildctl there from the BuildKit image.
        buildctl_dir = str(Path(env["OFC_BUILDCTL"]).parent)
        assert buildctl_dir in mounts
        mounts[buildctl_dir] = ["-v", f"{buildctl}:{buildctl_dir}:ro"]
        env["OFC_BUILDKIT_ADDR"] = f"tcp://127.0.0.1:{free_port()}"
    name = f"ofc-deploy-{folder}-{RUN_ID}"
    run = ["run", "-d", "--name", name, "--label", LABEL, "--network", "host"]
    run += ["--read-only", "--user", "10001:10001", "--cap-drop", "ALL"]
    run += ["--security-opt", "no-new-privileges"]
    for key, value in env.items():
        run += ["-e", f"{key}={value}"]
    started = engine.docker(*run, *(a for args in mounts.values() for a in args), tag, check=False)
    try:
        assert started.returncode == 0, started.stderr

        def healthy() -> bool:
            try:
                return (
                    requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
                )
            except requests.ConnectionError:
                return False

        def logs() -> str:
            state = engine.docker(
                "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", name, check=False
            )
            out = engine.docker("logs", name, check=False)
            return f"{folder}: {state.stdout.strip()}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"

        wait_until(healthy, 60, logs)
        response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert response.status_code == 200
    finally:
        engine.docker("rm", "-f", name, check=False)
    assert not engine.containers([f"label={LABEL}", f"name={name}"])
