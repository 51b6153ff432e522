"""``GET /system/logs?name=&tail=&since=&follow=``: newline-delimited JSON log records.

With ``follow=true`` the stream stays open and new lines arrive as the function
writes them, until the client disconnects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime

from runtime.gateway.web import HttpError, query_params
from runtime.httpcore.server import Handler, Request, Response
from runtime.provider import Provider


def _parse_since(text: str) -> float:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise HttpError(422, f"since={text!r} is not an RFC 3339 time") from None


def make_logs_handler(provider: Provider) -> Handler:
    async def logs(request: Request) -> Response:
        params = query_params(request)
        name = params.get("name", "")
        if not name:
            raise HttpError(422, "name is required: /system/logs?name=<function>")
        provider.get(name)  # 404 when unknown
        try:
            tail = int(params.get("tail", "0") or 0)
        except ValueError:
            raise HttpError(422, "tail must be a whole number") from None
        since = _parse_since(params["since"]) if params.get("since") else None
        follow_raw = params.get("follow", "false").lower()
        if follow_raw not in ("true", "false", "1", "0", ""):
            raise HttpError(422, "follow must be true or false")
        follow = follow_raw in ("true", "1")
        records = provider.log_lines(name, tail=tail, since=since, follow=follow)

        async def body() -> AsyncIterator[bytes]:
            async for record in records:
                yield json.dumps(record).encode() + b"\n"

        return Response(200, [(b"content-type", b"application/x-ndjson")], body())

    return logs
