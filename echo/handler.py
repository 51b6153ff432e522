"""echo: answers with the request body, as the original platform's echo function.

Used as a sink for audit events when no Slack URL is configured, and as a quick
check that the platform runs functions at all.
"""


def handle(event, context):
    return {
        "statusCode": 200,
        "body": event.body,
        "headers": {"Content-Type": event.headers.get("Content-Type", "text/plain")},
    }
