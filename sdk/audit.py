"""Posting audit events to the audit-event function, best effort.

Every stage tells the audit trail what it did; losing an audit line must never fail the
work it describes, so :meth:`Auditor.post` never raises: a failure is one log line.
audit-event checks ``X-Cloud-Signature`` like every internal receiver, so give the
``payload_secret`` (without it the event goes unsigned and is refused with 401).

>>> Auditor(None).enabled
False
"""

from __future__ import annotations

import json
import logging

import requests

from sdk.events import AuditEvent
from sdk.signing import CLOUD_SIGNATURE, sign

__all__ = ["Auditor"]

log = logging.getLogger(__name__)


class Auditor:
    """Posts :class:`AuditEvent` records to ``url``; disabled when ``url`` is empty or None.

    ``timeout`` is short on purpose: the caller waits for it. Point ``url`` at the
    gateway's ``/async-function/audit-event`` to not wait for Slack at all.
    """

    def __init__(
        self,
        url: str | None,
        session: requests.Session | None = None,
        *,
        payload_secret: str = "",
        timeout: float = 3.0,
    ) -> None:
        self.url = (url or "").strip()
        self.session = session or requests.Session()
        self.payload_secret = payload_secret
        self.timeout = timeout

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def post(self, event: AuditEvent) -> None:
        """Send ``event``; logs one line and returns on any failure, never raises."""
        if not self.enabled:
            return
        body = json.dumps(event.to_json()).encode()
        headers = {"Content-Type": "application/json"}
        if self.payload_secret:
            headers[CLOUD_SIGNATURE] = sign(body, self.payload_secret)
        try:
            response = self.session.post(self.url, data=body, headers=headers, timeout=self.timeout)
        except Exception as exc:  # best effort by contract: any failure is only logged
            # The exception text may carry the URL; its type is enough to act on.
            log.warning("audit event from %s not delivered: %s", event.source, type(exc).__name__)
            return
        if response.status_code >= 300:
            log.warning(
                "audit event from %s not accepted: HTTP %d", event.source, response.status_code
            )
            return
        log.info("audit event from %s delivered", event.source)
