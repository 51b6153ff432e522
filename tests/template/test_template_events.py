"""What the handler sees: event.body, headers, method, query, path and context."""

import hashlib
import os

import pytest
import requests

HANDLER_METHODS = ["GET", "PUT", "POST", "PATCH", "DELETE"]


def echo(function, method="GET", path="/echo", **kwargs):
    response = requests.request(method, function.url + path, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("method", HANDLER_METHODS)
def test_event_method_is_the_request_method(echo_function, method):
    assert echo(echo_function, method)["method"] == method


def test_head_calls_handler_with_head_and_sends_no_body(echo_function):
    response = requests.head(echo_function.url + "/method-header", timeout=5)

    assert response.status_code == 200
    assert response.headers["X-Method"] == "HEAD"
    assert response.content == b""


def test_options_is_answered_by_flask_with_allow_header(echo_function):
    response = requests.options(echo_function.url + "/method-header", timeout=5)

    assert response.status_code == 200
    assert "X-Method" not in response.headers  # the handler was not called
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert allowed == {*HANDLER_METHODS, "HEAD", "OPTIONS"}


def test_unsupported_method_gives_405(echo_function):
    response = requests.request("TRACE", echo_function.url + "/echo", timeout=5)

    assert response.status_code == 405


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        ("/", "/"),
        ("/a/b/c", "/a/b/c"),
        ("/trailing/", "/trailing/"),
        ("/with%20space", "/with space"),
        ("/_/not-a-probe", "/_/not-a-probe"),
    ],
    ids=["root", "nested", "trailing-slash", "percent-decoded", "other-underscore-path"],
)
def test_event_path_is_the_request_path(echo_function, sent, seen):
    assert echo(echo_function, path=sent)["path"] == seen


def test_event_query_keeps_repeated_values(echo_function):
    result = echo(echo_function, path="/echo?tag=a&tag=b&name=x")

    assert result["query"] == {"tag": ["a", "b"], "name": ["x"]}


def test_event_headers_get_is_case_insensitive(echo_function):
    result = echo(echo_function, headers={"X-Probe": "value"})

    assert (result["probe_lower"], result["probe_upper"]) == ("value", "value")


def test_event_body_is_the_raw_bytes(echo_function):
    payload = bytes(range(256))

    result = echo(echo_function, "POST", data=payload)

    assert result["body_type"] == "bytes"
    assert bytes.fromhex(result["body_hex"]) == payload


def test_event_body_is_empty_bytes_without_a_body(echo_function):
    assert echo(echo_function)["body_hex"] == ""


def test_event_body_of_10_mb_post_arrives_intact(echo_function):
    payload = os.urandom(10 * 1024 * 1024)

    result = echo(echo_function, "POST", path="/digest", data=payload)

    assert result == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def test_event_body_of_chunked_post_arrives_whole(echo_function):
    chunks = [b"first,", b"second,", b"third"]

    result = echo(echo_function, "POST", path="/digest", data=iter(chunks))

    whole = b"".join(chunks)
    assert result == {"length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_context_hostname_is_env_hostname(echo_function):
    assert echo(echo_function)["hostname"] == "replica-1"


def test_context_hostname_defaults_to_localhost(packaged_echo_function):
    assert echo(packaged_echo_function)["hostname"] == "localhost"
