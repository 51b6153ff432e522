"""``POST /system/functions``: deploy a new function (``PUT`` updates one).

The answer comes once the deployment is recorded; replicas become available when
their health check passes (watch ``availableReplicas``), as on OpenFaaS.
"""

from __future__ import annotations

from runtime.artifacts import ArtifactError, normalize_image
from runtime.gateway.web import read_json, text_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider
from sdk.openfaas import FunctionDeployment, RecordError


def read_deployment(raw: object) -> FunctionDeployment:
    """A validated deployment; :class:`RecordError` (400) names the bad field.

    The image reference is checked here too: a malformed one (``":"``, upper case)
    is the client's mistake, not a reason for the provider to fail with a 500.
    """
    spec = FunctionDeployment.from_json(raw)
    try:
        normalize_image(spec.image)
    except ArtifactError as exc:
        raise RecordError(f"image: {exc}") from None
    return spec


def make_deploy_function_handler(provider: Provider) -> Handler:
    async def deploy_function(request: Request) -> Response:
        spec = read_deployment(await read_json(request))
        await provider.deploy(spec)
        return text_response(202, f"deploying {spec.service}")

    return deploy_function
