"""The fake GitHub itself: it must refuse what GitHub refuses and answer in GitHub's shapes,
or every test built on it proves less than it claims."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from sdk.events import PushEvent
from sdk.signing import verify_github
from tests.fakes.github import (
    FakeGitHub,
    installation_payload,
    installation_repositories_payload,
    ping_payload,
    push_payload,
    requires_specs,
    to_json_schema,
    validate_webhook,
    webhook_delivery,
    webhook_key,
)
from tests.fakes.github import (
    fake_github as _fake_github,  # noqa: F401  (registers the fake_github fixture)
)

SHA = "a" * 40
HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


def app_jwt(
    fake: FakeGitHub, *, key: Any = None, iss: str | None = None, lifetime: int = 540
) -> str:
    now = int(time.time())
    claims = {"iss": iss or fake.app_id, "iat": now - 60, "exp": now + lifetime}
    return jwt.encode(claims, key or fake.private_key_pem, algorithm="RS256")


def installation_token(fake: FakeGitHub, installation_id: int | None = None) -> str:
    response = requests.post(
        f"{fake.url}/app/installations/{installation_id or fake.installation_id}/access_tokens",
        headers={**HEADERS, "Authorization": f"Bearer {app_jwt(fake)}"},
        timeout=5,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def call(fake: FakeGitHub, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return requests.request(method, fake.url + path, headers=headers, timeout=5, **kwargs)


# -- REST: authentication --------------------------------------------------------------------
def test_access_token_with_the_apps_jwt_is_minted_with_an_expiry(fake_github: FakeGitHub) -> None:
    response = requests.post(
        f"{fake_github.url}/app/installations/{fake_github.installation_id}/access_tokens",
        headers={**HEADERS, "Authorization": f"Bearer {app_jwt(fake_github)}"},
        timeout=5,
    )
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("ghs_")
    assert body["expires_at"].endswith("Z")
    assert fake_github.violations == []


@pytest.mark.parametrize(
    "make_jwt",
    [
        lambda f: app_jwt(f, key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        lambda f: app_jwt(f, iss="999"),
        lambda f: app_jwt(f, lifetime=900),
        lambda f: app_jwt(f, lifetime=-30),
        lambda f: "not-a-jwt",
    ],
    ids=[
        "signed-by-another-key",
        "wrong-issuer",
        "expires-beyond-10-minutes",
        "expired",
        "garbage",
    ],
)
def test_access_token_with_a_bad_jwt_is_refused_401(fake_github: FakeGitHub, make_jwt: Any) -> None:
    response = requests.post(
        f"{fake_github.url}/app/installations/{fake_github.installation_id}/access_tokens",
        headers={**HEADERS, "Authorization": f"Bearer {make_jwt(fake_github)}"},
        timeout=5,
    )
    assert response.status_code == 401
    assert "message" in response.json()


def test_access_token_for_an_unknown_installation_is_404(fake_github: FakeGitHub) -> None:
    response = requests.post(
        f"{fake_github.url}/app/installations/777/access_tokens",
        headers={**HEADERS, "Authorization": f"Bearer {app_jwt(fake_github)}"},
        timeout=5,
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "token", ["ghs_wrong", "app-jwt"], ids=["unknown-token", "app-jwt-not-a-token"]
)
def test_repo_call_without_an_installation_token_is_401(
    fake_github: FakeGitHub, token: str
) -> None:
    credential = app_jwt(fake_github) if token == "app-jwt" else token
    response = call(
        fake_github,
        "POST",
        f"/repos/alice/fn/statuses/{SHA}",
        credential,
        json={"state": "success"},
    )
    assert response.status_code == 401
    assert response.json()["message"] == "Bad credentials"


def test_revoked_token_is_401(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    fake_github.revoke_tokens()
    response = call(
        fake_github, "POST", f"/repos/alice/fn/statuses/{SHA}", token, json={"state": "success"}
    )
    assert response.status_code == 401


def test_token_of_an_installation_on_another_account_is_403(fake_github: FakeGitHub) -> None:
    fake_github.add_installation(2002, account="bob")
    token = installation_token(fake_github, 2002)
    response = call(
        fake_github, "POST", f"/repos/alice/fn/statuses/{SHA}", token, json={"state": "success"}
    )
    assert response.status_code == 403
    assert (
        call(
            fake_github, "POST", f"/repos/Bob/fn/statuses/{SHA}", token, json={"state": "success"}
        ).status_code
        == 201
    )


# -- REST: validation against GitHub's description --------------------------------------------
def test_unknown_route_is_404_and_noted_as_a_violation(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    response = call(fake_github, "POST", "/repos/alice/fn/check-suites", token, json={})
    assert response.status_code == 404
    assert fake_github.violations == [
        "POST /repos/alice/fn/check-suites: Not Found (no POST /repos/alice/fn/check-suites in GitHub's REST API)"
    ]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (f"/repos/alice/fn/statuses/{SHA}", {"state": "done"}, "state"),
        (f"/repos/alice/fn/statuses/{SHA}", {"description": "no state"}, "state"),
        ("/repos/alice/fn/check-runs", {"name": "fn"}, "head_sha"),
        (
            "/repos/alice/fn/check-runs",
            {"name": "fn", "head_sha": SHA, "status": "running"},
            "status",
        ),
        (
            "/repos/alice/fn/check-runs",
            {"name": "fn", "head_sha": SHA, "output": {"title": "t"}},
            "summary",
        ),
        (
            "/repos/alice/fn/check-runs",
            {
                "name": "fn",
                "head_sha": SHA,
                "output": {"title": "t", "summary": "s", "text": "x" * 65536},
            },
            "text",
        ),
        (
            "/repos/alice/fn/check-runs",
            {"name": "fn", "head_sha": SHA, "started_at": "yesterday"},
            "started_at",
        ),
    ],
    ids=[
        "bad-state",
        "missing-state",
        "missing-head-sha",
        "bad-status",
        "output-without-summary",
        "text-too-long",
        "bad-date",
    ],
)
def test_body_that_breaks_the_schema_is_422_with_the_reason(
    fake_github: FakeGitHub, path: str, body: dict[str, Any], expected: str
) -> None:
    token = installation_token(fake_github)
    response = call(fake_github, "POST", path, token, json=body)
    assert response.status_code == 422
    assert expected in response.json()["message"]
    assert len(fake_github.violations) == 1


def test_status_description_over_140_characters_is_422_as_on_github(
    fake_github: FakeGitHub,
) -> None:
    token = installation_token(fake_github)
    response = call(
        fake_github,
        "POST",
        f"/repos/alice/fn/statuses/{SHA}",
        token,
        json={"state": "success", "description": "x" * 141},
    )
    assert response.status_code == 422
    assert "maximum is 140 characters" in response.text


def test_completed_check_run_without_conclusion_is_422(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    body = {"name": "fn", "head_sha": SHA, "status": "completed"}
    assert (
        call(fake_github, "POST", "/repos/alice/fn/check-runs", token, json=body).status_code == 422
    )


def test_body_that_is_not_json_is_400(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    response = call(
        fake_github,
        "POST",
        f"/repos/alice/fn/statuses/{SHA}",
        token,
        data=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["message"] == "Problems parsing JSON"


def test_query_parameter_of_the_wrong_type_is_422(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    response = call(
        fake_github,
        "GET",
        f"/repos/alice/fn/commits/{SHA}/check-runs",
        token,
        params={"app_id": "abc"},
    )
    assert response.status_code == 422


def test_unsupported_api_version_is_400(fake_github: FakeGitHub) -> None:
    response = requests.get(
        f"{fake_github.url}/app", headers={"X-GitHub-Api-Version": "1999-01-01"}, timeout=5
    )
    assert response.status_code == 400


def test_nullable_openapi_schema_accepts_null() -> None:
    schema = to_json_schema(
        {"type": "object", "properties": {"nullable": {"type": "string", "nullable": True}}}
    )
    assert schema == {"type": "object", "properties": {"nullable": {"type": ["string", "null"]}}}


# -- REST: behaviour --------------------------------------------------------------------------
def test_check_run_create_list_by_name_and_update(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    created = call(
        fake_github,
        "POST",
        "/repos/alice/fn/check-runs",
        token,
        json={
            "name": "hello",
            "head_sha": SHA,
            "status": "in_progress",
            "output": {"title": "Build hello", "summary": "started"},
        },
    )
    assert created.status_code == 201
    run = created.json()
    assert run["html_url"] == f"https://github.com/alice/fn/runs/{run['id']}"
    assert run["app"]["id"] == int(fake_github.app_id)
    call(
        fake_github,
        "POST",
        "/repos/alice/fn/check-runs",
        token,
        json={"name": "other", "head_sha": SHA},
    )

    listed = call(
        fake_github,
        "GET",
        f"/repos/alice/fn/commits/{SHA}/check-runs",
        token,
        params={"check_name": "hello"},
    )
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["check_runs"]] == [run["id"]]

    patched = call(
        fake_github,
        "PATCH",
        f"/repos/alice/fn/check-runs/{run['id']}",
        token,
        json={"conclusion": "success", "output": {"title": "Build hello", "summary": "done"}},
    )
    assert patched.status_code == 200
    assert patched.json()["status"] == "completed"
    assert fake_github.runs_for("alice", "fn", SHA)[0]["output"]["summary"] == "done"
    assert fake_github.violations == []


def test_check_run_of_another_repository_is_404(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    run = call(
        fake_github,
        "POST",
        "/repos/alice/fn/check-runs",
        token,
        json={"name": "x", "head_sha": SHA},
    ).json()
    response = call(
        fake_github,
        "PATCH",
        f"/repos/alice/other/check-runs/{run['id']}",
        token,
        json={"name": "y"},
    )
    assert response.status_code == 404


def test_statuses_are_listed_newest_first_and_combined(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    for state in ("pending", "success"):
        response = call(
            fake_github,
            "POST",
            f"/repos/alice/fn/statuses/{SHA}",
            token,
            json={"state": state, "context": "stack-deploy"},
        )
        assert response.status_code == 201
        assert response.json()["state"] == state
    listed = call(fake_github, "GET", f"/repos/alice/fn/commits/{SHA}/statuses", token).json()
    assert [s["state"] for s in listed] == ["success", "pending"]
    combined = call(fake_github, "GET", f"/repos/alice/fn/commits/{SHA}/status", token).json()
    assert combined["state"] == "success"
    assert combined["total_count"] == 1


def test_fail_next_answers_the_injected_status_and_headers(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    fake_github.fail_next(1, status=403, retry_after=0.05, path_contains="/statuses/")
    fake_github.fail_next(1, status=502)
    path = f"/repos/alice/fn/statuses/{SHA}"
    first = call(fake_github, "POST", path, token, json={"state": "success"})
    assert (first.status_code, first.headers["Retry-After"]) == (403, "0.05")
    assert call(fake_github, "POST", path, token, json={"state": "success"}).status_code == 502
    assert call(fake_github, "POST", path, token, json={"state": "success"}).status_code == 201


def test_rate_limit_next_sends_github_rate_limit_headers(fake_github: FakeGitHub) -> None:
    fake_github.rate_limit_next(1)
    response = requests.get(f"{fake_github.url}/app", timeout=5)
    assert response.status_code == 403
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert float(response.headers["x-ratelimit-reset"]) <= time.time() + 1


def test_requests_are_recorded_without_the_authorization_header(fake_github: FakeGitHub) -> None:
    token = installation_token(fake_github)
    call(fake_github, "POST", f"/repos/alice/fn/statuses/{SHA}", token, json={"state": "success"})
    recorded = fake_github.calls("POST", "/statuses/")
    assert len(recorded) == 1
    assert recorded[0].json == {"state": "success"}
    assert recorded[0].status == 201
    assert "Authorization" not in recorded[0].headers
    assert recorded[0].headers["X-Github-Api-Version"] == "2022-11-28"


def test_user_and_orgs_for_an_oauth_token(fake_github: FakeGitHub) -> None:
    fake_github.add_user("gho_alice", "alice", orgs=["acme", "openfaas"])
    user = call(fake_github, "GET", "/user", "gho_alice")
    assert user.status_code == 200
    assert user.json()["login"] == "alice"
    orgs = call(fake_github, "GET", "/user/orgs", "gho_alice").json()
    assert [o["login"] for o in orgs] == ["acme", "openfaas"]
    assert call(fake_github, "GET", "/user", "gho_nobody").status_code == 401


# -- webhooks ---------------------------------------------------------------------------------
def test_webhook_delivery_headers_and_signatures_are_githubs() -> None:
    body, headers = webhook_delivery(
        "push", {"zen": "x"}, "It's a Secret to Everybody", app_id=424242
    )
    assert verify_github(body, headers, "It's a Secret to Everybody")
    assert headers["X-Hub-Signature-256"].startswith("sha256=")
    assert headers["X-Hub-Signature"].startswith("sha1=")
    assert headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert headers["X-GitHub-Event"] == "push"
    assert len(headers["X-GitHub-Delivery"]) == 36
    assert headers["X-GitHub-Hook-Installation-Target-ID"] == "424242"
    assert webhook_delivery("push", {}, "s")[1]["X-GitHub-Delivery"] != headers["X-GitHub-Delivery"]


@requires_specs
@pytest.mark.parametrize(
    ("event", "action", "payload"),
    [
        ("push", None, push_payload()),
        ("push", None, push_payload(private=True, owner="Alice", repo="fns", ref="refs/heads/dev")),
        ("push", None, push_payload(owner="acme", owner_type="Organization", commits=3)),
        ("push", None, push_payload(deleted=True)),
        ("push", None, push_payload(created=True)),
        ("push", None, push_payload(installation_id=None)),
        ("push", None, push_payload(ref="refs/tags/v1.0.0", commits=0)),
        ("installation", "created", installation_payload("created", repositories=["fn"])),
        (
            "installation",
            "created",
            installation_payload("created", account="acme", owner_type="Organization"),
        ),
        ("installation", "deleted", installation_payload("deleted")),
        ("installation", "suspend", installation_payload("suspend")),
        ("installation", "unsuspend", installation_payload("unsuspend")),
        (
            "installation",
            "new_permissions_accepted",
            installation_payload("new_permissions_accepted"),
        ),
        (
            "installation_repositories",
            "added",
            installation_repositories_payload("added", added=["a", "b"]),
        ),
        (
            "installation_repositories",
            "removed",
            installation_repositories_payload("removed", removed=["a"]),
        ),
        ("ping", None, ping_payload()),
        ("ping", None, ping_payload(app_id=None)),
    ],
    ids=[
        "push",
        "push-private",
        "push-org",
        "push-branch-deleted",
        "push-branch-created",
        "push-repo-hook",
        "push-tag",
        "installation-created",
        "installation-created-org",
        "installation-deleted",
        "installation-suspend",
        "installation-unsuspend",
        "installation-new-permissions",
        "repositories-added",
        "repositories-removed",
        "ping-app",
        "ping-repo-hook",
    ],
)
def test_payload_builders_pass_githubs_webhook_schema(
    event: str, action: str | None, payload: dict[str, Any]
) -> None:
    assert validate_webhook(event, action, payload) == []


@requires_specs
def test_validate_webhook_names_what_is_wrong() -> None:
    payload = push_payload()
    del payload["repository"]["clone_url"]
    payload["installation"]["id"] = "1001"
    problems = validate_webhook("push", None, payload)
    assert 'repository: "clone_url" is a required property' in problems
    assert 'installation/id: "1001" is not of type "integer"' in problems


@requires_specs
def test_webhook_key_maps_event_and_action_to_the_spec_entry() -> None:
    assert webhook_key("installation_repositories", "added") == "installation-repositories-added"
    assert webhook_key("push", None) == "push"
    with pytest.raises(ValueError, match="check_run"):
        webhook_key("check_run", "created")


def test_push_payload_variants_carry_what_the_pipeline_reads() -> None:
    deleted = push_payload(deleted=True)
    assert deleted["after"] == "0" * 40
    assert deleted["head_commit"] is None and deleted["commits"] == []
    assert push_payload(created=True)["before"] == "0" * 40
    org = push_payload(owner="acme", owner_type="Organization")
    assert org["repository"]["owner"]["type"] == "Organization"
    assert org["organization"]["login"] == "acme"
    assert "installation" not in push_payload(installation_id=None)


def test_push_payload_parses_as_a_push_event() -> None:
    payload = push_payload(
        owner="Alice", repo="fns", sha="b" * 40, private=True, installation_id=77, commits=2
    )
    event = PushEvent.from_github(payload, "delivery-1")
    assert (event.owner, event.repo, event.sha, event.private) == ("Alice", "fns", "b" * 40, True)
    assert (event.installation_id, event.commits, event.branch) == (77, 2, "main")
    assert event.clone_url == "https://github.com/Alice/fns.git"
