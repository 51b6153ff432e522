def handle(event, context):
    name = event.query.get("name") or (event.body.decode() if event.body else "") or "world"
    return {"statusCode": 200, "body": {"message": f"Hello, {name}!"}}
