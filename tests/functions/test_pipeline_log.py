"""pipeline-log: signed writes, signed reads and delivery claims, on the file backend and on
S3 (moto's server on loopback)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from sdk.logstore import LogKey, builds_query, read_query
from sdk.openfaas import FunctionDeployment
from sdk.signing import sign
from tests.conftest import RunningGateway
from tests.functions.conftest import Context, Event, load_handler
from tests.sdk.test_logstore import S3Server, hermetic_aws_env

SECRET = "pipeline-log-payload-secret"
SHA = "04b8e44f9d1c3b2a0e5f6a7b8c9d0e1f2a3b4c5d"
KEY = LogKey("AlexEllis", "super-cake", SHA, "slack-fn")
ENV_NAMES = (
    "log_storage",
    "log_dir",
    "s3_url",
    "s3_bucket",
    "s3_region",
    "s3_tls",
    "secret_mount_path",
)


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "payload-secret").write_text(SECRET + "\n")
    return folder


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, secrets: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``load(**env)``: import pipeline-log with only ``env`` (plus the secrets folder) set."""

    def load(**env: str) -> ModuleType:
        for name in ENV_NAMES:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        return load_handler("pipeline-log", {"secret_mount_path": str(secrets), **env}, monkeypatch)

    return load


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def fn(load, logs: Path) -> ModuleType:  # type: ignore[no-untyped-def]
    """pipeline-log on the file backend under ``logs``."""
    return load(log_dir=str(logs))


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


def post_log(fn: ModuleType, record: dict, secret: str = SECRET) -> dict:
    body = json.dumps(record).encode()
    return call(fn, Event(body, {"X-Cloud-Signature": sign(body, secret)}))


def get_log(fn: ModuleType, key: LogKey, secret: str = SECRET) -> dict:
    query = {"owner": key.owner, "repo": key.repo, "sha": key.sha, "function": key.function}
    headers = {"X-Cloud-Signature": sign(key.query.encode(), secret)}
    return call(fn, Event(method="GET", query=query, headers=headers))


def claim(fn: ModuleType, name: object, secret: str = SECRET) -> dict:
    body = json.dumps({"name": name}).encode()
    return call(fn, Event(body, {"X-Cloud-Signature": sign(body, secret)}, path="/claim"))


def call(fn: ModuleType, event: Event) -> dict:
    return fn.handle(event, Context())


def record(key: LogKey = KEY, data: str = "Step 1/2\nStep 2/2\n") -> dict:
    return {
        "owner": key.owner,
        "repo": key.repo,
        "sha": key.sha,
        "function": key.function,
        "source": "buildshiprun",
        "data": data,
    }


# -- round trips -----------------------------------------------------------------------------------


def test_pipeline_log_post_then_get_returns_the_log_exactly(fn: ModuleType, logs: Path) -> None:
    data = "Step 1/2 : FROM python\n✓ done\n\n"

    stored = post_log(fn, record(data=data))
    read = get_log(fn, KEY)

    assert (stored["statusCode"], stored["body"]) == (200, f"stored {len(data.encode())} bytes\n")
    assert read["statusCode"] == 200
    assert read["body"] == data
    assert read["headers"]["Content-Type"] == "text/plain; charset=utf-8"
    assert (logs / KEY.path).read_text() == data


def test_pipeline_log_on_s3_round_trips_and_claims(load, s3: S3Server, secrets: Path) -> None:  # type: ignore[no-untyped-def]
    (secrets / "s3-access-key").write_text("test-access-key")
    (secrets / "s3-secret-key").write_text("test-secret-key")
    fn = load(log_storage="s3", s3_url=s3.endpoint, s3_bucket="pipeline", s3_tls="false")

    assert post_log(fn, record(data="built"))["statusCode"] == 200
    assert get_log(fn, KEY)["body"] == "built"
    assert [claim(fn, "delivery-1")["statusCode"] for _ in range(2)] == [201, 409]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket="pipeline")["Contents"]]
    assert sorted(keys) == sorted([KEY.path, "_claims/delivery-1"])


def test_pipeline_log_get_of_an_absent_log_is_404(fn: ModuleType) -> None:
    reply = get_log(fn, KEY)

    assert reply["statusCode"] == 404
    assert KEY.path in reply["body"]


def test_pipeline_log_default_folder_is_under_home(load, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fn = load()

    post_log(fn, record())

    assert (tmp_path / "home" / "pipeline-logs" / KEY.path).is_file()


# -- signatures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Cloud-Signature": "sha256=" + "0" * 64}, {"X-Cloud-Signature": sign(b"{}", SECRET)}],
    ids=["missing", "wrong", "for-another-body"],
)
def test_pipeline_log_post_without_a_valid_signature_is_401_and_stores_nothing(
    fn: ModuleType, logs: Path, headers: dict[str, str]
) -> None:
    reply = call(fn, Event(json.dumps(record()).encode(), headers))

    assert reply["statusCode"] == 401
    assert not logs.exists()


def test_pipeline_log_post_signed_with_another_secret_is_401(fn: ModuleType) -> None:
    assert post_log(fn, record(), secret="not-the-secret")["statusCode"] == 401


def test_pipeline_log_get_without_a_signature_is_401(fn: ModuleType) -> None:
    post_log(fn, record())
    query = {"owner": KEY.owner, "repo": KEY.repo, "sha": KEY.sha, "function": KEY.function}

    reply = call(fn, Event(method="GET", query=query))

    assert reply["statusCode"] == 401
    assert "Step" not in reply["body"]


def test_pipeline_log_get_signed_for_another_log_is_401(fn: ModuleType) -> None:
    other = LogKey(KEY.owner, KEY.repo, KEY.sha, "other-fn")
    post_log(fn, record())
    query = {"owner": KEY.owner, "repo": KEY.repo, "sha": KEY.sha, "function": KEY.function}

    reply = call(
        fn,
        Event(
            method="GET",
            query=query,
            headers={"X-Cloud-Signature": sign(other.query.encode(), SECRET)},
        ),
    )

    assert reply["statusCode"] == 401


def test_pipeline_log_get_signed_over_an_empty_body_is_401(fn: ModuleType) -> None:
    post_log(fn, record())
    query = {"owner": KEY.owner, "repo": KEY.repo, "sha": KEY.sha, "function": KEY.function}

    reply = call(
        fn, Event(method="GET", query=query, headers={"X-Cloud-Signature": sign(b"", SECRET)})
    )

    assert reply["statusCode"] == 401


# -- malformed requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "request body is empty"),
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (
            json.dumps({k: v for k, v in record().items() if k != "data"}).encode(),
            "data is required",
        ),
        (json.dumps({**record(), "data": 42}).encode(), "data has the wrong type"),
    ],
    ids=["empty", "not-json", "not-object", "missing-data", "data-not-string"],
)
def test_pipeline_log_post_of_a_malformed_body_is_400_saying_why(
    fn: ModuleType, body: bytes, message: str
) -> None:
    reply = call(fn, Event(body, {"X-Cloud-Signature": sign(body, SECRET)}))

    assert reply["statusCode"] == 400
    assert message in reply["body"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("owner", ".."),
        ("owner", "a/b"),
        ("repo", ".."),
        ("repo", "../../etc"),
        ("sha", "HEAD"),
        ("function", "a/b"),
        ("function", ".."),
    ],
    ids=[
        "owner-parent",
        "owner-slash",
        "repo-parent",
        "repo-traversal",
        "sha-not-hex",
        "function-slash",
        "function-parent",
    ],
)
def test_pipeline_log_post_with_a_bad_key_part_is_400_naming_it_and_writes_nothing(
    fn: ModuleType, tmp_path: Path, field: str, value: str
) -> None:
    before = sorted(tmp_path.rglob("*"))

    reply = post_log(fn, {**record(), field: value})

    assert reply["statusCode"] == 400
    assert reply["body"].startswith(field)
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    "field, value",
    [("owner", ".."), ("repo", "a/b"), ("sha", "xyz"), ("function", ""), ("owner", "")],
    ids=["owner-parent", "repo-slash", "sha-not-hex", "function-missing", "owner-missing"],
)
def test_pipeline_log_get_with_a_bad_parameter_is_400_naming_it(
    fn: ModuleType, field: str, value: str
) -> None:
    query = {
        "owner": KEY.owner,
        "repo": KEY.repo,
        "sha": KEY.sha,
        "function": KEY.function,
        field: value,
    }
    signature = sign(
        read_query(query["owner"], query["repo"], query["sha"], query["function"]).encode(), SECRET
    )

    reply = call(fn, Event(method="GET", query=query, headers={"X-Cloud-Signature": signature}))

    assert reply["statusCode"] == 400
    assert reply["body"].startswith(field)


# -- claims ----------------------------------------------------------------------------------------


def test_pipeline_log_claim_is_201_the_first_time_and_409_after(fn: ModuleType) -> None:
    first = claim(fn, "delivery-72d3162e-cc78-11e3-81ab-4c9367dc0958")
    again = claim(fn, "delivery-72d3162e-cc78-11e3-81ab-4c9367dc0958")

    assert (first["statusCode"], again["statusCode"]) == (201, 409)
    assert "already claimed" in again["body"]


def test_pipeline_log_claim_survives_a_restart_of_the_function(load, logs: Path) -> None:  # type: ignore[no-untyped-def]
    assert claim(load(log_dir=str(logs)), "delivery-1")["statusCode"] == 201

    assert claim(load(log_dir=str(logs)), "delivery-1")["statusCode"] == 409


def test_pipeline_log_claim_without_a_valid_signature_is_401_and_claims_nothing(
    fn: ModuleType,
) -> None:
    body = json.dumps({"name": "delivery-1"}).encode()

    reply = call(fn, Event(body, {"X-Cloud-Signature": sign(b"", SECRET)}, path="/claim"))

    assert reply["statusCode"] == 401
    assert claim(fn, "delivery-1")["statusCode"] == 201


def release(fn: ModuleType, name: str, secret: str = SECRET) -> dict:
    body = json.dumps({"name": name}).encode()
    headers = {"X-Cloud-Signature": sign(body, secret)}
    return call(fn, Event(body, headers, method="DELETE", path="/claim"))


def test_pipeline_log_released_claim_can_be_claimed_again(fn: ModuleType) -> None:
    assert claim(fn, "delivery-9")["statusCode"] == 201

    assert release(fn, "delivery-9")["statusCode"] == 200
    assert claim(fn, "delivery-9")["statusCode"] == 201
    assert claim(fn, "delivery-9")["statusCode"] == 409


def test_pipeline_log_release_needs_a_valid_signature(fn: ModuleType) -> None:
    claim(fn, "delivery-10")

    assert release(fn, "delivery-10", secret="another")["statusCode"] == 401
    assert claim(fn, "delivery-10")["statusCode"] == 409


def test_pipeline_log_release_on_s3(load, s3: S3Server, secrets: Path) -> None:  # type: ignore[no-untyped-def]
    (secrets / "s3-access-key").write_text("test-access-key")
    (secrets / "s3-secret-key").write_text("test-secret-key")
    fn = load(log_storage="s3", s3_url=s3.endpoint, s3_bucket="claims", s3_tls="false")
    assert claim(fn, "delivery-s3")["statusCode"] == 201

    assert release(fn, "delivery-s3")["statusCode"] == 200
    assert claim(fn, "delivery-s3")["statusCode"] == 201


@pytest.mark.parametrize(
    "name", ["", "../x", "a/b", None, 7], ids=["empty", "traversal", "slash", "null", "number"]
)
def test_pipeline_log_claim_of_a_bad_name_is_400(fn: ModuleType, name: object) -> None:
    reply = claim(fn, name)

    assert reply["statusCode"] == 400
    assert "claim name" in reply["body"]


# -- routing and configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, status, allow",
    [
        ("PUT", "/", 405, "GET, HEAD, POST"),
        ("GET", "/claim", 405, "POST, DELETE"),
        ("POST", "/other", 404, None),
        ("POST", "/claim/x", 404, None),
    ],
    ids=["put-root", "get-claim", "unknown-path", "claim-name-in-path"],
)
def test_pipeline_log_other_methods_and_paths_are_refused(
    fn: ModuleType, method: str, path: str, status: int, allow: str | None
) -> None:
    reply = call(fn, Event(b"", method=method, path=path))

    assert reply["statusCode"] == status
    assert reply["headers"].get("Allow") == allow


def test_pipeline_log_with_an_unknown_storage_answers_500_naming_the_variable(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(log_storage="minio")

    reply = post_log(fn, record())

    assert reply["statusCode"] == 500
    assert "log_storage='minio'" in reply["body"]


def test_pipeline_log_without_its_payload_secret_answers_500_on_every_call(
    load, secrets: Path
) -> None:  # type: ignore[no-untyped-def]
    (secrets / "payload-secret").unlink()
    fn = load()

    replies = [post_log(fn, record()), get_log(fn, KEY), claim(fn, "x")]

    assert {r["statusCode"] for r in replies} == {500}
    assert "payload-secret" in replies[0]["body"]


def test_pipeline_log_on_s3_without_its_keys_answers_500_naming_the_secret(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(log_storage="s3", s3_url="127.0.0.1:9")

    reply = post_log(fn, record())

    assert reply["statusCode"] == 500
    assert "s3-access-key" in reply["body"]


def test_pipeline_log_storage_fault_is_500_without_secrets(load, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the log folder should be")
    fn = load(log_dir=str(blocked))

    reply = post_log(fn, record())

    assert reply["statusCode"] == 500
    assert reply["body"].startswith("storage failed: cannot write")
    assert SECRET not in reply["body"]


# -- deployed as the platform deploys it -------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_log_deployed_on_the_gateway_stores_and_serves_a_log(
    gateway: RunningGateway, tmp_path: Path
) -> None:
    """The handler served by the python3-http template with ``sdk/`` copied in, its
    requirements (boto3) installed, the payload secret mounted by the gateway."""
    repo = Path(__file__).resolve().parents[2]
    files = {f"sdk/{p.name}": p.read_text() for p in (repo / "sdk").glob("*.py")}
    gateway.store_function(
        "pipeline-log:test",
        (repo / "pipeline-log" / "handler.py").read_text(),
        (repo / "pipeline-log" / "requirements.txt").read_text(),
        files,
    )
    gateway.client.create_secret("payload-secret", SECRET.encode())
    gateway.client.deploy(
        FunctionDeployment(
            service="pipeline-log",
            image="pipeline-log:test",
            secrets=["payload-secret"],
            env_vars={"log_dir": str(tmp_path / "logs")},
        )
    )
    gateway.wait_ready("pipeline-log")
    body = json.dumps(record(data="built\n")).encode()
    signature = {"X-Cloud-Signature": sign(body, SECRET)}
    query = {"owner": KEY.owner, "repo": KEY.repo, "sha": KEY.sha, "function": KEY.function}

    stored = gateway.client.invoke("pipeline-log", body, headers=signature)
    read = gateway.client.invoke(
        "pipeline-log",
        method="GET",
        query=query,
        headers={"X-Cloud-Signature": sign(KEY.query.encode(), SECRET)},
    )

    assert (stored.status_code, stored.text) == (200, "stored 6 bytes\n")
    assert (read.status_code, read.text) == (200, "built\n")
    assert (tmp_path / "logs" / KEY.path).read_text() == "built\n"


# -- build lists -----------------------------------------------------------------------------------


def list_builds(fn: ModuleType, owner: str, repo: str, function: str, secret: str = SECRET) -> dict:
    query = {"owner": owner, "repo": repo, "function": function}
    headers = {"X-Cloud-Signature": sign(builds_query(owner, repo, function).encode(), secret)}
    return call(fn, Event(method="GET", query=query, headers=headers, path="/builds"))


def _store_builds(fn: ModuleType, shas: list[str]) -> None:
    for sha in shas:
        assert post_log(fn, record(LogKey(KEY.owner, KEY.repo, sha, KEY.function)))["statusCode"] == 200
    # Another function and another repository of the same owner are not this function's builds.
    post_log(fn, record(LogKey(KEY.owner, KEY.repo, shas[0], "other-fn")))
    post_log(fn, record(LogKey(KEY.owner, "other-repo", "abcd1234", KEY.function)))


def test_pipeline_log_lists_a_functions_builds_newest_first(fn: ModuleType, logs: Path) -> None:
    shas = ["1111aaaa", "2222bbbb", "3333cccc"]
    _store_builds(fn, shas)
    for age, sha in enumerate(reversed(shas)):  # the last stored is the newest
        path = logs / LogKey(KEY.owner, KEY.repo, sha, KEY.function).path
        os.utime(path, (1_700_000_000 - age * 60, 1_700_000_000 - age * 60))

    reply = list_builds(fn, KEY.owner, KEY.repo, KEY.function)

    assert reply["statusCode"] == 200
    assert reply["headers"]["Content-Type"] == "application/json"
    builds = json.loads(reply["body"])["builds"]
    assert [b["sha"] for b in builds] == ["3333cccc", "2222bbbb", "1111aaaa"]
    assert builds[0]["time"] == 1_700_000_000


def test_pipeline_log_lists_builds_on_s3(load, s3: S3Server, secrets: Path) -> None:  # type: ignore[no-untyped-def]
    (secrets / "s3-access-key").write_text("test-access-key")
    (secrets / "s3-secret-key").write_text("test-secret-key")
    fn = load(log_storage="s3", s3_url=s3.endpoint, s3_bucket="builds", s3_tls="false")
    _store_builds(fn, ["1111aaaa", "2222bbbb"])

    builds = json.loads(list_builds(fn, KEY.owner, KEY.repo, KEY.function)["body"])["builds"]

    assert sorted(b["sha"] for b in builds) == ["1111aaaa", "2222bbbb"]


def test_pipeline_log_build_list_of_an_unknown_function_is_empty(fn: ModuleType) -> None:
    reply = list_builds(fn, "nobody", "nothing", "none")
    assert (reply["statusCode"], json.loads(reply["body"])) == (200, {"builds": []})


def test_pipeline_log_build_list_needs_a_signature_over_its_own_query(fn: ModuleType) -> None:
    _store_builds(fn, ["1111aaaa"])
    query = {"owner": KEY.owner, "repo": KEY.repo, "function": KEY.function}
    forged = sign(builds_query(KEY.owner, "other-repo", KEY.function).encode(), SECRET)
    for headers in ({}, {"X-Cloud-Signature": forged}):
        reply = call(fn, Event(method="GET", query=query, headers=headers, path="/builds"))
        assert reply["statusCode"] == 401
        assert "1111aaaa" not in reply["body"]


def test_pipeline_log_build_list_with_a_bad_part_is_400_naming_it(fn: ModuleType) -> None:
    reply = list_builds(fn, KEY.owner, "..", KEY.function)
    assert reply["statusCode"] == 400
    assert "repo" in reply["body"]
