"""``POST /system/functions``: deploy a new function (``PUT`` updates one).

The answer comes once the deployment is recorded; replicas become available when
their health check passes (watch ``availableReplicas``), as on OpenFaaS.
"""

from __future__ import annotations

from sdk.openfaas import FunctionDeployment

from runtime.gateway.web import read_json, text_response
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider


def make_deploy_function_handler(provider: Provider) -> Handler:
    async def deploy_function(request: Request) -> Response:
        spec = FunctionDeployment.from_json(await read_json(request))
        await provider.deploy(spec)
        return text_response(202, f"deploying {spec.service}")

    return deploy_function
