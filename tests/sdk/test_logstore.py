"""sdk.logstore: log keys, the file backend, and the S3 backend against moto's S3 server
on loopback (never AWS: explicit endpoint, fake keys, no metadata lookups)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sdk.logstore import (
    FileLogStore,
    LogKey,
    LogKeyError,
    LogStore,
    LogStoreError,
    S3LogStore,
    read_query,
)
from tests.conftest import free_port

SHA = "04b8e44f9d1c3b2a0e5f6a7b8c9d0e1f2a3b4c5d"
KEY = LogKey("alexellis", "super-cake", SHA, "slack-fn")
ACCESS_KEY, SECRET_KEY = "test-access-key", "test-secret-key"


class S3Server:
    """moto's S3-compatible server on 127.0.0.1, in this process's threads."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def store(self, bucket: str | None = None, **kwargs: object) -> S3LogStore:
        """A store on a fresh bucket (created on first write) unless ``bucket`` is given."""
        options: dict = {
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "tls": False,
            **kwargs,
        }
        return S3LogStore(bucket or f"logs-{uuid.uuid4().hex[:12]}", **options)

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client(
            "s3",
            endpoint_url=f"http://{self.endpoint}",
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )


def hermetic_aws_env(mp: pytest.MonkeyPatch) -> None:
    """No AWS configuration, credentials or instance metadata from outside the test."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        mp.delenv(name, raising=False)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    mp.setenv("AWS_CONFIG_FILE", "/dev/null")
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as mp:
        hermetic_aws_env(mp)
        server = S3Server()
        server.server.start()
        try:
            yield server
        finally:
            server.server.stop()


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LogStore:
    """Each backend in turn, empty."""
    if request.param == "file":
        return FileLogStore(tmp_path / "logs")
    return request.getfixturevalue("s3").store()


# -- keys --------------------------------------------------------------------------------------


def test_log_key_path_is_owner_repo_sha_function_build_log() -> None:
    assert KEY.path == f"alexellis/super-cake/{SHA}/slack-fn/build.log"


def test_log_key_query_is_canonical_and_url_encoded() -> None:
    assert KEY.query == f"owner=alexellis&repo=super-cake&sha={SHA}&function=slack-fn"
    assert read_query("a b", "c&d", "e=f", "g") == "owner=a+b&repo=c%26d&sha=e%3Df&function=g"


@pytest.mark.parametrize(
    "parts",
    [
        ("AlexEllis", "super-cake", SHA, "slack-fn"),
        ("alex.ellis_", "repo.name_v2", SHA, "Fn1"),
        ("a", ".github", "af6db", "x"),
        ("org-1", "..a", "0000", "a-b-c"),
    ],
    ids=["mixed-case-owner", "dots-and-underscores", "dot-repo-short-sha", "dotdot-prefix-repo"],
)
def test_log_key_accepts_names_github_allows(parts: tuple[str, str, str, str]) -> None:
    LogKey(*parts)


@pytest.mark.parametrize(
    "parts, named",
    [
        (("..", "repo", SHA, "fn"), "owner"),
        (("a/b", "repo", SHA, "fn"), "owner"),
        ((".hidden", "repo", SHA, "fn"), "owner"),
        (("_claims", "repo", SHA, "fn"), "owner"),
        (("", "repo", SHA, "fn"), "owner is required"),
        (("owner", "..", SHA, "fn"), "repo"),
        (("owner", ".", SHA, "fn"), "repo"),
        (("owner", "a/../b", SHA, "fn"), "repo"),
        (("owner", "re po", SHA, "fn"), "repo"),
        (("owner", "repo", "xyz1234", "fn"), "sha"),
        (("owner", "repo", SHA.upper(), "fn"), "sha"),
        (("owner", "repo", SHA + "0", "fn"), "sha"),
        (("owner", "repo", "abc", "fn"), "sha"),
        (("owner", "repo", SHA, "a/b"), "function"),
        (("owner", "repo", SHA, ".."), "function"),
        (("owner", "repo", SHA, "-fn"), "function"),
        (("owner", "repo", SHA, "fn_1"), "function"),
        (("owner", "repo", SHA, "f" * 64), "function"),
    ],
    ids=[
        "owner-parent",
        "owner-slash",
        "owner-leading-dot",
        "owner-claims-prefix",
        "owner-empty",
        "repo-parent",
        "repo-dot",
        "repo-traversal",
        "repo-space",
        "sha-not-hex",
        "sha-upper-case",
        "sha-41",
        "sha-3",
        "function-slash",
        "function-parent",
        "function-leading-dash",
        "function-underscore",
        "function-64",
    ],
)
def test_log_key_rejects_a_part_that_is_not_a_plain_name(
    parts: tuple[str, str, str, str], named: str
) -> None:
    with pytest.raises(LogKeyError, match=f"^{named}"):
        LogKey(*parts)


# -- both backends ---------------------------------------------------------------------------------


def test_store_round_trips_a_log_exactly(store: LogStore) -> None:
    data = "Step 1/3 : FROM python\n✓ built in 10s\r\nno trailing newline"

    store.put(KEY, data)

    assert store.get(KEY) == data


def test_store_get_of_an_absent_log_is_none(store: LogStore) -> None:
    assert store.get(KEY) is None


def test_store_put_replaces_the_earlier_log(store: LogStore) -> None:
    store.put(KEY, "first build, much longer than the second")
    store.put(KEY, "second")

    assert store.get(KEY) == "second"


def test_store_keeps_logs_of_other_functions_and_commits_apart(store: LogStore) -> None:
    other_fn = LogKey(KEY.owner, KEY.repo, KEY.sha, "other-fn")
    other_sha = LogKey(KEY.owner, KEY.repo, "f" * 40, KEY.function)

    store.put(KEY, "one")
    store.put(other_fn, "two")

    assert (store.get(KEY), store.get(other_fn), store.get(other_sha)) == ("one", "two", None)


def test_store_claim_is_true_once_then_false(store: LogStore) -> None:
    assert store.claim("delivery-72d3162e-cc78-11e3-81ab-4c9367dc0958") is True
    assert store.claim("delivery-72d3162e-cc78-11e3-81ab-4c9367dc0958") is False
    assert store.claim("delivery-other") is True


def test_file_store_claim_under_concurrent_callers_is_won_exactly_once(tmp_path: Path) -> None:
    # S3's atomicity is the server's (conditional writes); moto checks then writes without
    # a lock, so racing it would test moto. O_EXCL is ours to rely on.
    store = FileLogStore(tmp_path)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait()
        results.append(store.claim("contended"))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize(
    "name",
    ["", "..", "a/b", "../x", "-x", "x" * 201],
    ids=["empty", "parent", "slash", "traversal", "leading-dash", "too-long"],
)
def test_store_claim_rejects_a_name_that_is_not_plain(store: LogStore, name: str) -> None:
    with pytest.raises(LogKeyError, match="^claim name"):
        store.claim(name)


def test_store_claims_and_logs_never_collide(store: LogStore) -> None:
    # An owner named like the claim folder's last part, and a claim named like a repo.
    key = LogKey("claims", "x", SHA, "fn")
    store.put(key, "log")

    assert store.claim("x") is True
    assert store.get(key) == "log"


# -- file backend ----------------------------------------------------------------------------------


def test_file_store_writes_under_the_key_path_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    FileLogStore(tmp_path).put(KEY, "log")

    assert (tmp_path / KEY.path).read_text() == "log"
    assert [p.name for p in (tmp_path / KEY.path).parent.iterdir()] == ["build.log"]


def test_file_store_keeps_claims_in_their_own_folder(tmp_path: Path) -> None:
    FileLogStore(tmp_path).claim("delivery-1")

    assert (tmp_path / "_claims" / "delivery-1").is_file()


def test_file_store_that_cannot_write_raises_log_store_error(tmp_path: Path) -> None:
    root = tmp_path / "not-a-folder"
    root.write_text("")

    with pytest.raises(LogStoreError, match=f"cannot write {KEY.path}"):
        FileLogStore(root).put(KEY, "log")
    with pytest.raises(LogStoreError, match="cannot claim x"):
        FileLogStore(root).claim("x")


# -- S3 backend ------------------------------------------------------------------------------------


def test_s3_store_creates_its_bucket_and_writes_the_key_path(s3: S3Server) -> None:
    store = s3.store()

    store.put(KEY, "log")

    listed = s3.client().list_objects_v2(Bucket=store.bucket)
    assert [o["Key"] for o in listed["Contents"]] == [KEY.path]


def test_s3_store_claim_is_a_conditional_put_under_claims(s3: S3Server) -> None:
    store = s3.store()

    store.claim("delivery-1")

    listed = s3.client().list_objects_v2(Bucket=store.bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["_claims/delivery-1"]


def test_s3_store_that_cannot_reach_its_endpoint_raises_log_store_error(s3: S3Server) -> None:
    store = s3.store(endpoint_url=f"127.0.0.1:{free_port()}", attempts=1)

    with pytest.raises(LogStoreError, match=f"cannot write {KEY.path}: Could not connect"):
        store.put(KEY, "log")
    with pytest.raises(LogStoreError, match=f"cannot read {KEY.path}"):
        store.get(KEY)
    with pytest.raises(LogStoreError, match="cannot claim x"):
        store.claim("x")


@pytest.mark.parametrize(
    "endpoint, tls, expected",
    [
        ("minio:9000", False, "http://minio:9000"),
        ("minio:9000", True, "https://minio:9000"),
        ("https://minio:9000/", True, "https://minio:9000"),
        ("", True, None),
    ],
    ids=["host-plain", "host-tls", "url-agrees", "aws-default"],
)
def test_s3_store_endpoint_follows_the_tls_setting(
    endpoint: str, tls: bool, expected: str | None
) -> None:
    store = S3LogStore(
        "b",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key="k",
        secret_key="s",
        tls=tls,
        client=object(),
    )

    assert store.endpoint_url == expected


def test_s3_store_endpoint_whose_scheme_contradicts_tls_is_refused() -> None:
    with pytest.raises(ValueError, match="TLS is on"):
        S3LogStore(
            "b",
            endpoint_url="http://minio:9000",
            region="us-east-1",
            access_key="k",
            secret_key="s",
            tls=True,
            client=object(),
        )


def test_build_list_keeps_the_newest_fifty_with_their_last_status(tmp_path: Path) -> None:
    store = FileLogStore(tmp_path)
    for i in range(55):
        key = LogKey("alice", "fns", f"{i:04x}aaaa", "hello")
        store.put(key, "log")
        store.put_status(
            key, json.dumps({"state": "failure" if i % 2 else "success", "description": f"#{i}"})
        )
        for path in (tmp_path / key.path, tmp_path / key.status_path):
            os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))

    builds = store.builds("alice", "fns", "hello")

    assert len(builds) == 50
    assert [b.sha for b in builds[:2]] == ["0036aaaa", "0035aaaa"]  # newest first
    assert (builds[0].state, builds[0].description) == ("success", "#54")
    assert (builds[1].state, builds[1].description) == ("failure", "#53")
    assert builds[-1].sha == "0005aaaa"
