"""The gateway against the OpenFaaS OpenAPI spec: generated and malformed requests, every route.

The spec (``../shared/specs/openfaas-gateway.openapi.yml``) is loaded, corrected where it
is known to be wrong (``SPEC_CORRECTIONS``, each with its reason), and handed to
schemathesis, which sends generated requests to a real ``python -m runtime`` with one
function (``echo``) deployed: examples from the spec, boundary values ("coverage"), and
random positive and NEGATIVE (schema-violating) data. The requirement is that
generated malformed requests get 4xx, never 5xx; beyond that, every schemathesis check
stays on except the ones listed in ``DISABLED_CHECKS`` with the reason.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from schemathesis import GenerationMode

from tests.conftest import ECHO_HANDLER, RunningGateway, free_port

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO.parent / "shared" / "specs" / "openfaas-gateway.openapi.yml"

if not SPEC_PATH.is_file():
    pytest.skip(
        f"OpenFaaS gateway spec not found at {SPEC_PATH}: "
        "the conformance tests need the shared specs next to the repository",
        allow_module_level=True,
    )

RAW_SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())

FUNCTION = "echo"  # deployed before fuzzing; generated calls to /function/* target it

# Operations the gateway deliberately does not serve (tested below to answer 404, so the
# list cannot silently go stale once one is implemented).
NOT_IMPLEMENTED = {
    ("POST", "/system/alert"): "AlertManager auto-scaling: this runtime scales only on request",
}

Correction = Callable[[dict[str, Any]], None]


def documents_status(method: str, path: str, status: str) -> Correction:
    def correct(spec: dict[str, Any]) -> None:
        spec["paths"][path][method]["responses"][status] = {"description": "see SPEC_CORRECTIONS"}

    return correct


def secrets_list_is_an_array(spec: dict[str, Any]) -> None:
    listing = spec["paths"]["/system/secrets"]["get"]["responses"]["200"]
    listing["content"]["application/json"]["schema"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/SecretDescription"},
    }


def takes_any_method(path: str) -> Correction:
    def correct(spec: dict[str, Any]) -> None:
        invoke = spec["paths"][path]["post"]
        for method in ("get", "put", "patch", "delete"):
            spec["paths"][path][method] = {
                **copy.deepcopy(invoke),
                "operationId": f"{invoke['operationId']}_{method}",
            }

    return correct


def null_means_absent(spec: dict[str, Any]) -> None:
    request_bodies = (
        "FunctionDeployment",
        "DeleteFunctionRequest",
        "ScaleServiceRequest",
        "SecretDescription",
        "SecretValues",
    )
    for name in request_bodies:
        component = spec["components"]["schemas"][name]
        for field, definition in component["properties"].items():
            if field not in component.get("required", []):
                definition["nullable"] = True


# Where the spec disagrees with OpenFaaS itself (contracts §1, §7) or leaves out a status
# this gateway answers on purpose, it is corrected before any check uses it: reason, fix.
SPEC_CORRECTIONS: dict[str, Correction] = {
    "GET /system/secrets answers a JSON array of {name, namespace}, not one object "
    "(contracts §1.7, §7.2)": secrets_list_is_an_array,
    "POST /system/functions answers 409 when the name is taken (PUT updates)": documents_status(
        "post", "/system/functions", "409"
    ),
    "POST /system/secrets answers 409 when the secret exists (PUT updates)": documents_status(
        "post", "/system/secrets", "409"
    ),
    "POST /system/scale-function answers 400 to a malformed body; the spec lists no 4xx "
    "but 404": documents_status("post", "/system/scale-function/{functionName}", "400"),
    "GET /system/logs answers 422 to bad parameters, as faas-provider's logs handler "
    "(contracts §1.8)": documents_status("get", "/system/logs", "422"),
    "/function/{name} passes every method to the function, not only POST "
    "(contracts §1.2)": takes_any_method("/function/{functionName}"),
    "/function/{name}.{namespace} likewise": takes_any_method(
        "/function/{functionName}.{namespace}"
    ),
    "null in an optional request field means absent: Go's encoding/json leaves the field "
    "at its zero value, so faas-provider accepts it, and sdk.openfaas does the same": (
        null_means_absent
    ),
}


def corrected_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with every fix in ``SPEC_CORRECTIONS`` applied."""
    spec = copy.deepcopy(raw)
    for correct in SPEC_CORRECTIONS.values():
        correct(spec)
    return spec


# Checks switched off, and why. Everything else schemathesis has stays on.
DISABLED_CHECKS = {
    # The spec's schemas carry none of the provider's real constraints: names must be
    # DNS-1123 labels, the image must be in the artifact store, named secrets must
    # exist, a secret needs a value, logs need an existing function. So "schema-valid"
    # requests are legitimately refused with 400/404/422.
    "positive_data_acceptance",
}

schema = schemathesis.openapi.from_dict(corrected_spec(RAW_SPEC)).exclude(
    func=lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in NOT_IMPLEMENTED
)
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=50,
    deterministic=True,
    database="none",
)
schema.config.seed = 20261121  # with deterministic=True: the same requests on every run
schema.config.checks.update(excluded_check_names=sorted(DISABLED_CHECKS))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[RunningGateway]:
    """One gateway for every generated request, with ``echo`` deployed and ready."""
    state = tmp_path_factory.mktemp("conformance") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    try:
        gw.deploy(FUNCTION, ECHO_HANDLER)
        yield gw
    finally:
        gw.stop()


@schema.parametrize()
def test_generated_request_is_answered_without_server_error_and_as_specified(
    case: schemathesis.Case, target: RunningGateway
) -> None:
    if case.path.startswith("/function/") or case.path.startswith("/async-function/"):
        # Random names would only ever reach the 404 branch; call the deployed function.
        case.path_parameters = {**(case.path_parameters or {}), "functionName": FUNCTION}
    response = case.call(base_url=target.url, auth=target.credentials, timeout=15)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} got {response.status_code}: {response.text[:300]}"
    )
    case.validate_response(response)


def spec_operations() -> list[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return [
        (method.upper(), path)
        for path, item in RAW_SPEC["paths"].items()
        for method in item
        if method in methods
    ]


def concrete(path: str) -> str:
    return path.replace("{functionName}", FUNCTION).replace("{namespace}", "openfaas-fn")


def served_ids(op: tuple[str, str]) -> str:
    return f"{op[0]}-{op[1]}"


@pytest.mark.parametrize(
    "operation",
    [op for op in spec_operations() if op not in NOT_IMPLEMENTED],
    ids=served_ids,
)
def test_spec_operation_is_served_by_the_gateway(
    operation: tuple[str, str], target: RunningGateway
) -> None:
    method, path = operation
    response = requests.request(
        method,
        target.url + concrete(path),
        auth=target.credentials,
        params={"name": FUNCTION} if path == "/system/logs" else None,
        # An empty JSON object: enough to reach the handler, refused by validation
        # before it could change anything.
        json={} if method in ("POST", "PUT", "DELETE") and path.startswith("/system/") else None,
        timeout=15,
    )
    assert "no such endpoint" not in response.text
    assert response.status_code != 405, response.headers.get("allow")


@pytest.mark.parametrize("operation", list(NOT_IMPLEMENTED), ids=served_ids)
def test_unimplemented_spec_operation_answers_404(
    operation: tuple[str, str], target: RunningGateway
) -> None:
    method, path = operation
    response = requests.request(
        method, target.url + concrete(path), auth=target.credentials, json={}, timeout=15
    )
    assert response.status_code == 404
    assert "no such endpoint" in response.text
