"""Reporting a commit status from any pipeline stage to the ``github-status`` function.

Each stage builds a :class:`~sdk.events.CommitStatus` and hands it to
:meth:`StatusReporter.report`, which calls ``github-status`` synchronously through the
gateway with an ``X-Cloud-Signature``. Reporting is best effort: a failure is logged and
the pipeline goes on, because a build must not fail because GitHub (or the status
function) is having a bad minute.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from sdk.events import CommitStatus
from sdk.gateway import GatewayClient, GatewayError
from sdk.signing import CLOUD_SIGNATURE, sign

__all__ = ["DESCRIPTION_LIMIT", "STATUS_FUNCTION", "StatusReporter", "truncate"]

log = logging.getLogger(__name__)

# GitHub answers 422 "description is too long (maximum is 140 characters)" beyond this.
DESCRIPTION_LIMIT = 140
STATUS_FUNCTION = "github-status"
ELLIPSIS = "…"


def truncate(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, ending in "…" when it was cut.

    >>> truncate("x" * 200)[-3:], len(truncate("x" * 200))
    ('xx…', 140)
    """
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS


class StatusReporter:
    """Sends commit statuses to ``github-status``; does nothing when ``enabled`` is false.

    ``gateway`` is the client for the platform's gateway; ``payload_secret`` signs each
    body (``X-Cloud-Signature``). ``function`` names the status function.
    """

    def __init__(
        self,
        gateway: GatewayClient,
        payload_secret: str,
        *,
        enabled: bool,
        function: str = STATUS_FUNCTION,
        timeout: float = 30.0,
    ) -> None:
        self._gateway = gateway
        self._secret = payload_secret
        self.enabled = enabled
        self.function = function
        self.timeout = timeout

    def report(self, status: CommitStatus) -> None:
        """Send ``status``; never raises: a failure is logged and the caller goes on."""
        if not self.enabled:
            return
        where = f"{status.owner}/{status.repo}@{status.sha[:12]} {status.context}={status.state}"
        try:
            body = json.dumps(
                replace(status, description=truncate(status.description)).to_json()
            ).encode()
            response = self._gateway.invoke(
                self.function,
                body,
                headers={
                    "Content-Type": "application/json",
                    CLOUD_SIGNATURE: sign(body, self._secret),
                },
                timeout=self.timeout,
            )
        except GatewayError as exc:
            log.warning("status %s not reported: %s", where, exc)
            return
        except Exception:  # best effort by contract: a status must never stop a build
            log.exception("status %s not reported: unexpected error", where)
            return
        if response.status_code == 200:
            log.info("status %s reported", where)
        elif response.status_code == 202:
            # github-status took it and chose not to pass it on (no GitHub App, reporting
            # off, GitHub unreachable): it has logged why; nothing is wrong here.
            log.info("status %s not passed on by %s", where, self.function)
        else:
            reason = response.text.strip()[:300]
            log.warning(
                "status %s not reported: %s answered %d: %s",
                where,
                self.function,
                response.status_code,
                reason,
            )
