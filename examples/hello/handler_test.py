from types import SimpleNamespace

from handler import handle


def event(body=b"", query=None):
    return SimpleNamespace(body=body, query=query or {}, headers={}, method="POST", path="/")


def test_handle_greets_the_name_in_the_query():
    assert handle(event(query={"name": "Ann"}), None)["body"] == {"message": "Hello, Ann!"}


def test_handle_greets_the_world_without_a_name():
    assert handle(event(), None)["body"] == {"message": "Hello, world!"}
