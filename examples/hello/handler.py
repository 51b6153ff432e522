"""The example function: greets whoever is named in ?name=, the body, or the world."""

import os


def handle(event, context):
    name = event.query.get("name") or event.body.decode("utf-8", "replace").strip() or "world"
    greeting = os.environ.get("greeting", "Hello")
    return {"statusCode": 200, "body": {"message": f"{greeting}, {name}!"}}
