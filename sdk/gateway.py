"""A client for the OpenFaaS gateway API: invoke, deploy, list, remove, secrets, logs.

Used by the ``ofc`` CLI and by the platform's functions. Deploy follows faas-cli:
PUT to update first, POST to create when the function is absent; any 2xx counts as
success (faasd answers 200 where the spec says 202). Errors raise
:class:`GatewayError` carrying the status and the gateway's message; credentials
never appear in messages.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from sdk.openfaas import FunctionDeployment

__all__ = ["GatewayClient", "GatewayError"]


class GatewayError(Exception):
    """The gateway refused a request or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.message = message


@dataclass
class GatewayClient:
    """Talks to one gateway at ``url`` with basic-auth credentials for ``/system/*``."""

    url: str
    user: str = ""
    password: str = ""
    timeout: float = 30.0
    session: requests.Session | None = None

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if self.session is None:
            self.session = requests.Session()

    # -- plumbing --------------------------------------------------------------------------------
    def _auth_header(self) -> dict[str, str]:
        if not self.user:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        assert self.session is not None
        headers = dict(kwargs.pop("headers", {}))
        # Credentials go to the gateway's own API only: a function would otherwise
        # receive them in its request headers (the gateway forwards what it is sent).
        if path.startswith("/system/"):
            headers.update(self._auth_header())
        try:
            return self.session.request(
                method,
                self.url + path,
                headers=headers,
                timeout=kwargs.pop("timeout", self.timeout),
                **kwargs,
            )
        except requests.ConnectionError:
            raise GatewayError(
                0, f"cannot reach the gateway at {self.url}: is it running?"
            ) from None
        except requests.Timeout:
            raise GatewayError(0, f"the gateway at {self.url} did not answer in time") from None

    def _system(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self._request(method, path, **kwargs)
        if not 200 <= response.status_code < 300:
            raise GatewayError(response.status_code, response.text.strip() or response.reason)
        return response

    # -- functions --------------------------------------------------------------------------------
    def list_functions(self) -> list[dict[str, Any]]:
        """Every function as FunctionStatus JSON."""
        return list(self._system("GET", "/system/functions").json())

    def get_function(self, name: str) -> dict[str, Any] | None:
        """One function's status, or ``None`` when it is not deployed."""
        response = self._request("GET", f"/system/function/{name}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise GatewayError(response.status_code, response.text.strip())
        return dict(response.json())

    def deploy(self, deployment: FunctionDeployment) -> str:
        """Create or update a function (PUT, then POST on 404); returns "updated" or "created"."""
        body = deployment.to_json()
        response = self._request("PUT", "/system/functions", json=body)
        if response.status_code == 404:
            self._system("POST", "/system/functions", json=body)
            return "created"
        if not 200 <= response.status_code < 300:
            raise GatewayError(response.status_code, response.text.strip())
        return "updated"

    def remove(self, name: str) -> None:
        """Delete a function; :class:`GatewayError` 404 when absent."""
        self._system("DELETE", "/system/functions", json={"functionName": name})

    def scale(self, name: str, replicas: int) -> None:
        self._system(
            "POST",
            f"/system/scale-function/{name}",
            json={"serviceName": name, "replicas": replicas},
        )

    def info(self) -> dict[str, Any]:
        return dict(self._system("GET", "/system/info").json())

    # -- invocation -------------------------------------------------------------------------------
    def invoke(
        self,
        name: str,
        body: bytes = b"",
        *,
        method: str = "POST",
        path: str = "",
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        """Call a function synchronously; the function's own status is returned, not raised."""
        suffix = "/" + path.lstrip("/") if path else ""
        return self._request(
            method,
            f"/function/{name}{suffix}",
            data=body,
            params=dict(query or {}),
            headers=dict(headers or {}),
            timeout=timeout or self.timeout,
        )

    def invoke_async(
        self,
        name: str,
        body: bytes = b"",
        *,
        callback_url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Queue a call; returns its call id."""
        extra = dict(headers or {})
        if callback_url:
            extra["X-Callback-Url"] = callback_url
        response = self._request("POST", f"/async-function/{name}", data=body, headers=extra)
        if response.status_code != 202:
            raise GatewayError(response.status_code, response.text.strip())
        return response.headers.get("X-Call-Id", "")

    # -- secrets ----------------------------------------------------------------------------------
    def list_secrets(self) -> list[str]:
        return [s["name"] for s in self._system("GET", "/system/secrets").json()]

    def create_secret(self, name: str, value: bytes) -> None:
        """Create a secret, or update it when it exists."""
        body = {"name": name, "rawValue": base64.b64encode(value).decode()}
        response = self._request("POST", "/system/secrets", json=body)
        if response.status_code == 409:
            self._system("PUT", "/system/secrets", json=body)
        elif not 200 <= response.status_code < 300:
            raise GatewayError(response.status_code, response.text.strip())

    def delete_secret(self, name: str) -> None:
        self._system("DELETE", "/system/secrets", json={"name": name})

    # -- logs and queue ---------------------------------------------------------------------------
    def logs(
        self, name: str, *, tail: int = 0, follow: bool = False, since: str | None = None
    ) -> Iterator[dict[str, str]]:
        """Log records of a function, oldest first; with ``follow`` new ones as they come."""
        params: dict[str, str] = {
            "name": name,
            "tail": str(tail),
            "follow": "true" if follow else "false",
        }
        if since:
            params["since"] = since
        response = self._system(
            "GET",
            "/system/logs",
            params=params,
            stream=True,
            timeout=None if follow else self.timeout,
        )
        with response:
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

    def queue(self, status: str | None = None) -> dict[str, Any]:
        """Async calls and counts per status (an extension of the OpenFaaS API)."""
        params = {"status": status} if status else {}
        return dict(self._system("GET", "/system/queue", params=params).json())

    def retry_failed(self, call_id: str | None = None) -> int:
        body = {"callId": call_id} if call_id else {}
        return int(self._system("POST", "/system/queue/retry", json=body).json()["requeued"])
