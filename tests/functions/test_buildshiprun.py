"""buildshiprun: what a user's function is deployed as, and what a user can never set."""

from __future__ import annotations

import pytest

from sdk.events import BuildRequest, PushEvent
from tests.functions.conftest import load_handler
from tests.helpers import Recorder

SHA = "a" * 40


@pytest.fixture(scope="module")
def bsr():  # type: ignore[no-untyped-def]
    return load_handler("buildshiprun")


def push(owner: str = "Alice", repo: str = "fns") -> PushEvent:
    return PushEvent(
        delivery_id="d1", owner=owner, owner_id=42, repo=repo, full_name=f"{owner}/{repo}",
        clone_url=f"https://github.com/{owner}/{repo}.git", html_url=f"https://github.com/{owner}/{repo}",
        private=False, ref="refs/heads/main", sha=SHA, default_branch="main", installation_id=7,
    )


def request(**overrides: object) -> BuildRequest:
    fields: dict[str, object] = {
        "push": push().to_json(), "function": "hello", "image": "reg/alice/fns-hello:main-aaaa",
        "context_digest": "d" * 64, "tar": "eA==",
    }
    fields.update(overrides)
    return BuildRequest(**fields)  # type: ignore[arg-type]


def deploy(bsr, req: BuildRequest | None = None):  # type: ignore[no-untyped-def]
    req = req or request()
    cfg = bsr.Config.from_env({})
    return bsr.deployment_for(req, req.push_event, req.image, cfg, 1_800_000_000)


def test_deployment_name_is_lower_owner_dash_function(bsr) -> None:  # type: ignore[no-untyped-def]
    assert deploy(bsr).service == "alice-hello"


def test_deployment_carries_the_platform_labels(bsr) -> None:  # type: ignore[no-untyped-def]
    labels = deploy(bsr).labels
    assert labels["com.openfaas.cloud.git-owner"] == "Alice"
    assert labels["com.openfaas.cloud.git-owner-id"] == "42"  # the real number (the original sent 0)
    assert labels["com.openfaas.cloud.git-repo"] == "fns"
    assert labels["com.openfaas.cloud.git-sha"] == SHA
    assert labels["com.openfaas.cloud.git-branch"] == "main"
    assert labels["com.openfaas.cloud.git-deploytime"] == "1800000000"
    assert labels["com.openfaas.cloud.git-private"] == "0"
    assert labels["com.openfaas.cloud.context-digest"] == "d" * 64


@pytest.mark.parametrize(
    "key",
    ["com.openfaas.cloud.git-owner", "com.openfaas.cloud.anything", "role", "openfaas-cloud"],
    ids=["owner-label", "any-platform-prefix", "role", "openfaas-cloud"],
)
def test_user_labels_cannot_set_reserved_keys(bsr, key: str) -> None:  # type: ignore[no-untyped-def]
    labels = deploy(bsr, request(labels={key: "mallory", "team": "blue"})).labels
    assert labels.get(key) != "mallory"
    assert labels["team"] == "blue"


def test_user_annotations_pass_only_the_allow_list(bsr) -> None:  # type: ignore[no-untyped-def]
    annotations = deploy(
        bsr, request(annotations={"topic": "orders", "schedule": "*/5 * * * *", "com.openfaas.profile": "x"})
    ).annotations
    assert annotations["topic"] == "orders"
    assert annotations["schedule"] == "*/5 * * * *"
    assert "com.openfaas.profile" not in annotations
    assert annotations["com.openfaas.cloud.git-repo-url"] == "https://github.com/Alice/fns"


def test_user_secrets_are_prefixed_with_the_owner(bsr) -> None:  # type: ignore[no-untyped-def]
    assert deploy(bsr, request(secrets=["api-key"])).secrets == ["alice-api-key"]


def test_a_prefixed_secret_that_names_a_platform_secret_is_refused(bsr) -> None:  # type: ignore[no-untyped-def]
    req = request(push=push(owner="payload").to_json(), secrets=["secret"])
    with pytest.raises(bsr.Failed, match="reserved by the platform"):
        deploy(bsr, req)


def test_a_function_key_that_is_not_a_dns_name_is_refused_naming_it(bsr) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(bsr.Failed, match="functions.Bad_Name"):
        bsr.function_name("alice", "Bad_Name")


def test_limits_come_from_platform_config_not_the_user(bsr) -> None:  # type: ignore[no-untyped-def]
    cfg = bsr.Config.from_env({"function_memory_limit": "256Mi", "function_cpu_limit": "500m"})
    req = request()
    deployment = bsr.deployment_for(req, req.push_event, req.image, cfg, 0)
    assert deployment.limits is not None
    assert (deployment.limits.memory, deployment.limits.cpu) == ("256Mi", "500m")
    assert deployment.read_only_root_filesystem is True


def test_a_busy_builder_is_waited_for_not_reported_as_a_failed_build(bsr) -> None:  # type: ignore[no-untyped-def]
    answers = iter([(429, b'{"log": ["busy"], "image": "", "status": "failure"}')] * 3)
    done = b'{"log": ["built"], "image": "reg/alice/fns-hello:main-aaaa", "status": "success"}'
    with Recorder(lambda request: next(answers, (200, done))) as builder:
        run = bsr.BuildShipRun(bsr.Config.from_env({"builder_url": builder.url}))
        response = run.post_build(b"tar", "secret")
    assert response.status_code == 200
    assert len(builder.received) == 4  # three refusals, then the build
    assert all(r.body == b"tar" and r.headers["X-Build-Signature"] for r in builder.received)


def test_a_builder_busy_past_the_build_timeout_fails_saying_so(bsr) -> None:  # type: ignore[no-untyped-def]
    busy = (429, b'{"log": ["busy"], "image": "", "status": "failure"}')
    with Recorder(lambda request: busy) as builder:
        cfg = bsr.Config.from_env({"builder_url": builder.url, "build_timeout": "1s"})
        with pytest.raises(bsr.Failed, match="every build slot stayed busy for 1 s"):
            bsr.BuildShipRun(cfg).post_build(b"tar", "secret")
    assert 2 <= len(builder.received) <= 12  # it kept trying, with back-off, within the limit
