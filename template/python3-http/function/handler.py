def handle(event, context):
    """Answer every request with a greeting.

    event: body (bytes), headers, method, query, path.
    context: hostname.
    Return None, a dict with statusCode/body/headers, or anything Flask can send.
    """
    return {
        "statusCode": 200,
        "body": "Hello from OpenFaaS!",
    }
