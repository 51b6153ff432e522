from types import SimpleNamespace

# A plain import rather than `from .handler import handle`, so the test runs both
# inside the image (function/ is a package there) and from a build folder (it is
# not); tox.ini puts this folder on pytest's path. To skip tests at build time set
# the build arg TEST_ENABLED=false.
from handler import handle


def make_event(method="GET", path="/", body=b""):
    return SimpleNamespace(body=body, headers={}, method=method, query={}, path=path)


def test_handle_returns_200_with_greeting():
    result = handle(make_event(), SimpleNamespace(hostname="localhost"))

    assert result == {"statusCode": 200, "body": "Hello from OpenFaaS!"}


def test_handle_ignores_method_and_body():
    result = handle(make_event("POST", body=b"ignored"), SimpleNamespace(hostname="localhost"))

    assert result["statusCode"] == 200
