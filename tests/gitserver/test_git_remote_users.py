"""Users of the git remote: ``ofc user add/list/remove`` through the real CLI (no runtime
needed), and the rules of :mod:`gitserver.users`."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from gitserver.users import FIRST_ID, UserError, UserStore, users_file
from tests.helpers import Cli, free_port


@pytest.fixture
def cli(tmp_path: Path, venv_dir: Path) -> Cli:
    return Cli(tmp_path / "state", free_port(), venv_dir)


def test_user_add_prints_a_token_once_and_list_never_shows_it(cli: Cli) -> None:
    added = cli.ok("user", "add", "Alice")
    token = added.stdout.strip().splitlines()[-1]

    listed = cli.ok("user", "list")

    assert len(token) >= 43  # 32 random bytes, URL-safe base64
    assert "printed below, once" in added.stderr
    assert token not in added.stderr
    assert listed.stdout == "Alice\n"
    assert token not in listed.stdout + listed.stderr
    saved = users_file(cli.state_dir).read_text()
    assert token not in saved
    assert json.loads(saved)["alice"] == {
        "name": "Alice",
        "id": FIRST_ID,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    }
    assert stat.S_IMODE(users_file(cli.state_dir).stat().st_mode) == 0o600


def test_user_add_of_a_name_taken_in_any_case_fails(cli: Cli) -> None:
    cli.ok("user", "add", "alice")

    again = cli.run("user", "add", "ALICE")

    assert again.returncode == 1
    assert again.stderr == "ofc: user 'alice' already exists\n"
    assert again.stdout == ""


def test_user_remove_deletes_the_user_and_a_second_remove_fails(cli: Cli) -> None:
    cli.ok("user", "add", "alice")
    cli.ok("user", "add", "bob")

    removed = cli.ok("user", "remove", "Alice")
    again = cli.run("user", "remove", "alice")

    assert "their repositories stay" in removed.stderr
    assert cli.ok("user", "list").stdout == "bob\n"
    assert (again.returncode, again.stderr) == (1, "ofc: no user 'alice'\n")


@pytest.mark.parametrize(
    "name",
    ["-alice", "alice-", "al--ice", "al_ice", "al.ice", "a" * 40, "", "x-access-token"],
    ids=["leading-hyphen", "trailing-hyphen", "double-hyphen", "underscore", "dot",
         "too-long", "empty", "the-read-user"],
)  # fmt: skip
def test_user_add_refuses_a_name_github_would_not_accept(tmp_path: Path, name: str) -> None:
    store = UserStore(tmp_path / "users.json")

    with pytest.raises(UserError):
        store.add(name)

    assert store.read() == {}


@pytest.mark.parametrize(
    "name", ["a", "a-b-c", "A1", "x" * 39], ids=["one", "hyphens", "digit", "39"]
)
def test_user_add_accepts_a_github_login(tmp_path: Path, name: str) -> None:
    user, token = UserStore(tmp_path / "users.json").add(name)

    assert UserStore(tmp_path / "users.json").authenticate(name.upper(), token) == user


def test_user_ids_grow_and_a_token_is_only_its_owners(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    alice, alice_token = store.add("alice")
    bob, bob_token = store.add("bob")

    assert (alice.id, bob.id) == (FIRST_ID, FIRST_ID + 1)
    assert store.authenticate("alice", bob_token) is None
    assert store.authenticate("nobody", alice_token) is None
    assert store.authenticate("bob", bob_token) == bob


def test_the_server_keeps_its_last_good_users_when_the_file_breaks(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    writer, reader = UserStore(path), UserStore(path)
    alice, token = writer.add("alice")
    assert reader.authenticate("alice", token) == alice

    path.write_text("{not json")

    assert reader.authenticate("alice", token) == alice
    with pytest.raises(UserError, match="cannot read the users file"):
        writer.read()
