"""The root stack.yml as `faas-cli up` reads it for a production OpenFaaS (docs/production.md).

The same file deploys on the embedded runtime; these tests pin what a cluster needs from
it: images under ``$REGISTRY`` and ``$TAG``, every secret it names produced by
``ofc secrets generate`` for the functions' namespace, the labels the NetworkPolicies
and the dashboard rely on, and timeouts a build fits in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ofc.secrets_gen import FUNCTIONS, SECRETS
from sdk.config import parse_duration
from sdk.stack import Stack, load_stack

REPO = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = {
    "REGISTRY": "ghcr.io/acme/ofc",
    "TAG": "1a2b3c4",
    "GITHUB_APP_ID": "123456",
    "FUNCTION_URL_TEMPLATE": "https://{owner}.example.com/{short_name}",
}


@pytest.fixture(scope="module")
def stack() -> Stack:
    # As faas-cli sees it with only the documented variables exported: the in-cluster
    # defaults apply to everything else.
    return load_stack(REPO / "stack.yml", PRODUCTION_ENV)


def test_every_image_is_under_registry_and_tag(stack: Stack) -> None:
    for name, fn in stack.functions.items():
        assert fn.image == f"ghcr.io/acme/ofc/{name}:1a2b3c4", name


def test_every_platform_function_carries_the_system_labels(stack: Stack) -> None:
    for name, fn in stack.functions.items():
        # NetworkPolicy ofc-core-ingress lets exactly these pods reach the gateway and builder.
        assert fn.labels.get("role") == "openfaas-system", name
        assert fn.labels.get("openfaas-cloud") == "1", name


def test_ofc_secrets_generate_covers_every_secret_the_stack_names(stack: Stack) -> None:
    in_functions_namespace = {s.name for s in SECRETS if FUNCTIONS in s.namespaces}
    for name, fn in stack.functions.items():
        missing = set(fn.secrets) - in_functions_namespace
        assert not missing, f"{name} needs {missing}, which `ofc secrets generate` does not make"


def test_pipeline_reaches_gateway_and_builder_by_their_in_cluster_names(stack: Stack) -> None:
    env = stack.functions["buildshiprun"].environment
    assert env["gateway_url"] == "http://gateway.openfaas:8080"
    assert env["builder_url"] == "http://of-builder.openfaas:8080"  # ofc render's Service


@pytest.mark.parametrize("name", ["git-tar", "buildshiprun"])
def test_functions_that_wait_for_builds_get_fifteen_minutes(stack: Stack, name: str) -> None:
    # The documented gateway and queue timeouts (15m) are sized for this.
    assert parse_duration(stack.functions[name].environment["exec_timeout"]) >= 15 * 60


def test_environment_files_exist_beside_the_stack(stack: Stack) -> None:
    files = {f for fn in stack.functions.values() for f in fn.environment_file}
    assert {"gateway_config.yml", "github.yml", "buildshiprun_limits.yml"} <= files
    for f in files:
        assert (REPO / f).is_file(), f
