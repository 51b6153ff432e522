"""A test function: one path per return form, and an echo of the event otherwise."""

import hashlib

from flask import Response

import sdk  # function/sdk/, as faas-cli's configuration.copy delivers shared code


def echo(event, context):
    return {
        "body": {
            "method": event.method,
            "path": event.path,
            "query": {name: event.query.getlist(name) for name in event.query},
            "body_hex": event.body.hex(),
            "body_type": type(event.body).__name__,
            "probe_lower": event.headers.get("x-probe"),
            "probe_upper": event.headers.get("X-PROBE"),
            "hostname": context.hostname,
        }
    }


RESULTS = {
    "/none": lambda event, context: None,
    "/str": lambda event, context: "plain string",
    "/dict-json": lambda event, context: {"statusCode": 201, "body": {"a": 1}},
    "/list-json": lambda event, context: {"body": [1, "two"]},
    "/json-own-type": lambda event, context: {
        "body": {"a": 1},
        "headers": {"Content-Type": "application/vnd.api+json"},
    },
    "/bytes": lambda event, context: {"body": b"\x00\x01\xfe\xff"},
    "/bytes-own-type": lambda event, context: {
        "body": b"\x89PNG",
        "headers": {"Content-Type": "image/png"},
    },
    "/number": lambda event, context: {"body": 42},
    "/status-only": lambda event, context: {"statusCode": 204},
    "/header-dict": lambda event, context: {"body": "x", "headers": {"X-Custom": "yes"}},
    "/header-pairs": lambda event, context: {
        "body": "x",
        "headers": [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
    },
    "/tuple": lambda event, context: ("teapot", 418, {"X-Tuple": "1"}),
    "/response": lambda event, context: Response(b"made by flask", 202, mimetype="text/plain"),
    "/method-header": lambda event, context: {"body": "", "headers": {"X-Method": event.method}},
    "/digest": lambda event, context: {
        "body": {"length": len(event.body), "sha256": hashlib.sha256(event.body).hexdigest()}
    },
    "/sdk": lambda event, context: {"body": {"marker": sdk.MARKER, "file": sdk.__file__}},
    "/unsendable": lambda event, context: 12345,
}


def handle(event, context):
    if event.path == "/raise":
        raise RuntimeError("secret detail from the handler")
    if event.path == "/print":
        print("printed by the handler")
        return "printed"
    return RESULTS.get(event.path, echo)(event, context)
