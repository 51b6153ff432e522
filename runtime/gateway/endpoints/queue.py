"""``/system/queue``: the async queue as the CLI sees it (an extension of the OpenFaaS API).

``GET`` lists calls (``?status=failed`` for parked ones) with counts per status;
``POST /system/queue/retry`` with ``{"callId": ...}`` (or ``{}`` for all) requeues
parked calls. Bodies are never returned.
"""

from __future__ import annotations

from runtime.gateway.web import HttpError, json_response, query_params, read_json
from runtime.httpcore.server import Handler, Request, Response
from runtime.queue.store import CallStore

STATUSES = ("queued", "running", "done", "failed")


def make_queue_handler(store: CallStore) -> Handler:
    async def queue(request: Request) -> Response:
        params = query_params(request)
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise HttpError(400, f"status must be one of {', '.join(STATUSES)}")
        calls = store.list(status=status, function=params.get("function") or None, limit=200)
        return json_response(
            200,
            {
                "counts": store.counts(),
                "calls": [
                    {
                        "callId": c.call_id,
                        "function": c.function,
                        "status": c.status,
                        "attempts": c.attempts,
                        "enqueuedAt": c.enqueued_at,
                        "updatedAt": c.updated_at,
                        "lastError": c.last_error,
                        "resultStatus": c.result_status,
                        "duration": c.duration,
                    }
                    for c in calls
                ],
            },
        )

    return queue


def make_queue_retry_handler(store: CallStore, wake) -> Handler:  # type: ignore[no-untyped-def]
    async def queue_retry(request: Request) -> Response:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object, {} to retry every failed call")
        call_id = body.get("callId")
        if call_id is not None and not isinstance(call_id, str):
            raise HttpError(400, "callId must be a string")
        count = store.retry_failed(call_id)
        if call_id is not None and count == 0:
            raise HttpError(404, f"no failed call with id {call_id!r}")
        wake()
        return json_response(200, {"requeued": count})

    return queue_retry
