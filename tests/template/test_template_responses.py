"""How python3-http turns each handler return form into an HTTP response."""

import pytest
import requests


def get(function, path):
    return requests.get(function.url + path, timeout=5)


def test_none_gives_200_with_empty_body(echo_function):
    response = get(echo_function, "/none")

    assert (response.status_code, response.content) == (200, b"")


def test_string_gives_200_text_html(echo_function):
    response = get(echo_function, "/str")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.text == "plain string"


@pytest.mark.parametrize(
    ("path", "status", "payload"),
    [("/dict-json", 201, {"a": 1}), ("/list-json", 200, [1, "two"])],
    ids=["dict-body-with-statusCode", "list-body"],
)
def test_dict_with_dict_or_list_body_gives_json(echo_function, path, status, payload):
    response = get(echo_function, path)

    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == payload


def test_dict_with_json_body_keeps_handler_content_type(echo_function):
    response = get(echo_function, "/json-own-type")

    assert response.headers["Content-Type"] == "application/vnd.api+json"
    assert response.json() == {"a": 1}


def test_dict_with_bytes_body_is_sent_raw_as_octet_stream(echo_function):
    response = get(echo_function, "/bytes")

    assert response.content == b"\x00\x01\xfe\xff"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_dict_with_bytes_body_keeps_handler_content_type(echo_function):
    response = get(echo_function, "/bytes-own-type")

    assert response.content == b"\x89PNG"
    assert response.headers["Content-Type"] == "image/png"


def test_dict_with_other_body_is_str_ed_as_text_html(echo_function):
    response = get(echo_function, "/number")

    assert response.text == "42"
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"


def test_dict_without_body_sends_status_and_empty_body(echo_function):
    response = get(echo_function, "/status-only")

    assert (response.status_code, response.content) == (204, b"")


def test_dict_headers_as_dict_are_sent(echo_function):
    response = get(echo_function, "/header-dict")

    assert response.headers["X-Custom"] == "yes"


def test_dict_headers_as_pairs_keep_repeated_names(echo_function):
    response = get(echo_function, "/header-pairs")

    assert response.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_tuple_passes_through_to_flask(echo_function):
    response = get(echo_function, "/tuple")

    assert (response.status_code, response.text) == (418, "teapot")
    assert response.headers["X-Tuple"] == "1"


def test_flask_response_passes_through_unchanged(echo_function):
    response = get(echo_function, "/response")

    assert (response.status_code, response.content) == (202, b"made by flask")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
