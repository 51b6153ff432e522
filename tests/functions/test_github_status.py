"""github-status/handler.py against the fake GitHub: one check run per commit and context,
the commit Status API when checks are off, bounded retries, and never a 5xx for GitHub's faults."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from runtime.artifacts import ArtifactStore
from sdk.events import CommitStatus
from sdk.gateway import GatewayClient
from sdk.openfaas import FunctionDeployment
from sdk.signing import sign, verify
from sdk.status import StatusReporter
from tests.fakes.github import FakeGitHub
from tests.fakes.github import (
    fake_github as _fake_github,  # noqa: F401  (registers the fake_github fixture)
)
from tests.functions.conftest import REPO, Context, Event, load_handler
from tests.helpers import Recorder

SECRET = "the-payload-secret"
SHA = "e" * 40
FOLDER = "github-status"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def secrets_dir(tmp_path: Path, fake_github: FakeGitHub) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "payload-secret").write_text(SECRET + "\n")
    (folder / "private-key").write_text(fake_github.private_key_pem)
    return folder


@pytest.fixture
def make_handler(
    monkeypatch: pytest.MonkeyPatch, fake_github: FakeGitHub, secrets_dir: Path
) -> Any:
    """``make_handler(**env)``: the handler imported with the fake's settings plus ``env``."""

    def make(**env: str) -> ModuleType:
        for name in ("use_checks", "report_status", "pipeline_log_url", "dashboard_url", "github_app_id"):
            monkeypatch.delenv(name, raising=False)
        settings = {
            "secret_mount_path": str(secrets_dir),
            "github_app_id": fake_github.app_id,
            "github_api_url": fake_github.url,
            **env,
        }
        return load_handler(FOLDER, settings, monkeypatch)

    return make


@pytest.fixture
def log_server() -> Iterator[dict[str, Any]]:
    """A plain HTTP server answering every GET with ``state["log"]``; records the queries."""
    state: dict[str, Any] = {"log": "", "status": 200, "queries": [], "signed": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            query = urlparse(self.path).query
            state["queries"].append(parse_qs(query))
            state["signed"].append(
                verify(query.encode(), self.headers.get("X-Cloud-Signature"), SECRET)
            )
            data = state["log"].encode()
            self.send_response(state["status"])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["url"] = f"http://127.0.0.1:{server.server_port}/function/pipeline-log"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


def status(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "owner": "alice",
        "repo": "fn",
        "sha": SHA,
        "installation_id": 1001,
        "context": "hello",
        "state": "pending",
        "description": "hello function build started, image: registry/alice-hello:e1",
        "target_url": "",
        "log_url": "",
    }
    body.update(overrides)
    return body


def call(
    handler: ModuleType, body: dict[str, Any] | bytes, *, secret: str = SECRET, method: str = "POST"
) -> dict[str, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    event = Event(
        raw,
        {"Content-Type": "application/json", "X-Cloud-Signature": sign(raw, secret)},
        method=method,
    )
    return dict(handler.handle(event, Context()))


def no_credentials_in(text: str, fake: FakeGitHub) -> bool:
    """True when no installation token, JWT ("eyJ…") or key material is in ``text``."""
    return (
        not any(token in text for token in fake.minted_tokens)
        and "eyJ" not in text
        and "PRIVATE KEY" not in text
    )


# -- the Checks API (default) -----------------------------------------------------------------
def test_first_report_creates_a_check_run_in_progress(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    result = call(make_handler(), status())
    assert result["statusCode"] == 200
    assert json.loads(result["body"]) == {"reported": "hello"}
    (run,) = fake_github.runs_for("alice", "fn", SHA)
    assert (run["name"], run["status"], run["conclusion"]) == ("hello", "in_progress", None)
    assert run["output"]["title"] == "Build hello"
    assert run["output"]["summary"].startswith("hello function build started")
    assert fake_github.violations == []


def test_second_report_for_the_same_context_updates_the_run(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    handler = make_handler()
    call(handler, status())
    result = call(
        handler,
        status(
            state="success",
            description="deployed: alice-hello",
            target_url="https://alice.example.com/hello",
        ),
    )
    assert result["statusCode"] == 200
    assert len(fake_github.calls("POST", "/check-runs")) == 1
    assert len(fake_github.calls("PATCH", "/check-runs/")) == 1
    (run,) = fake_github.runs_for("alice", "fn", SHA)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["details_url"] == "https://alice.example.com/hello"
    assert (
        run["output"]["summary"]
        == "deployed: alice-hello\n\n[Details](https://alice.example.com/hello)"
    )
    assert fake_github.violations == []


def test_a_functions_run_links_its_build_log_on_the_dashboard(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    handler = make_handler(dashboard_url="https://system.example.com/dashboard/")
    call(handler, status(state="failure", description="build failed: tests"))
    call(handler, status(context="stack-deploy", state="failure", description="1 failed"))

    runs = {r["name"]: r for r in fake_github.runs_for("alice", "fn", SHA)}
    link = f"[Build log](https://system.example.com/dashboard/alice/hello/build/{SHA})"
    assert runs["hello"]["output"]["summary"] == f"build failed: tests\n\n{link}"
    assert "Build log" not in runs["stack-deploy"]["output"]["summary"]
    assert fake_github.violations == []


def test_lookup_asks_for_this_apps_run_of_that_name(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    call(make_handler(), status())
    (lookup,) = fake_github.calls("GET", f"/commits/{SHA}/check-runs")
    assert lookup.query == {"check_name": "hello", "filter": "latest", "app_id": fake_github.app_id}


def test_each_context_gets_its_own_run(make_handler: Any, fake_github: FakeGitHub) -> None:
    handler = make_handler()
    for context in ("stack-deploy", "hello", "world", "hello"):
        assert call(handler, status(context=context))["statusCode"] == 200
    runs = fake_github.runs_for("alice", "fn", SHA)
    assert sorted(r["name"] for r in runs) == ["hello", "stack-deploy", "world"]
    assert {r["name"]: r["output"]["title"] for r in runs}["stack-deploy"] == "Deploy to OpenFaaS"


@pytest.mark.parametrize(
    ("state", "expected"),
    [("success", "success"), ("failure", "failure"), ("error", "failure")],
    ids=["success", "failure", "error-is-failure"],
)
def test_final_states_complete_the_run_with_a_conclusion(
    make_handler: Any, fake_github: FakeGitHub, state: str, expected: str
) -> None:
    call(make_handler(), status(state=state))
    (run,) = fake_github.runs_for("alice", "fn", SHA)
    assert (run["status"], run["conclusion"]) == ("completed", expected)
    assert run["completed_at"]
    assert fake_github.violations == []


def test_check_run_shows_the_build_log_from_log_url(
    make_handler: Any, fake_github: FakeGitHub, log_server: dict[str, Any]
) -> None:
    log_server["log"] = "Step 1/3 : FROM python\nSuccessfully built abc\n"
    call(make_handler(), status(state="success", log_url=log_server["url"] + "?x=1"))
    assert log_server["signed"] == [True]
    text = fake_github.runs_for("alice", "fn", SHA)[0]["output"]["text"]
    assert text == "```text\nStep 1/3 : FROM python\nSuccessfully built abc\n\n```"


def test_long_build_log_keeps_its_tail_within_65535_characters(
    make_handler: Any, fake_github: FakeGitHub, log_server: dict[str, Any]
) -> None:
    lines = [f"line {i:06d} " + "x" * 60 for i in range(2000)]  # ~140,000 characters
    log_server["log"] = "\n".join(lines)
    call(make_handler(), status(state="failure", log_url=log_server["url"]))
    text = fake_github.runs_for("alice", "fn", SHA)[0]["output"]["text"]
    assert len(text) <= 65535
    assert text.startswith("**The build log was truncated**: showing its last ")
    assert text.endswith(lines[-1] + "\n```")
    first_kept = text.split("```text\n", 1)[1].split("\n", 1)[0]
    assert first_kept in lines  # cut at a line start
    assert fake_github.violations == []


def test_build_log_is_fetched_from_pipeline_log_url_for_a_finished_function(
    make_handler: Any, fake_github: FakeGitHub, log_server: dict[str, Any]
) -> None:
    log_server["log"] = "built\n"
    handler = make_handler(pipeline_log_url=log_server["url"])
    call(handler, status())  # pending: no log yet
    call(handler, status(state="success"))
    assert log_server["queries"] == [
        {"owner": ["alice"], "repo": ["fn"], "sha": [SHA], "function": ["hello"]}
    ]
    assert log_server["signed"] == [True]  # pipeline-log checks reads: signed over the query
    assert "built" in fake_github.runs_for("alice", "fn", SHA)[0]["output"]["text"]


def test_unavailable_build_log_still_reports_the_status(
    make_handler: Any, fake_github: FakeGitHub, log_server: dict[str, Any]
) -> None:
    log_server["status"] = 404
    result = call(make_handler(), status(state="failure", log_url=log_server["url"]))
    assert result["statusCode"] == 200
    assert fake_github.runs_for("alice", "fn", SHA)[0]["output"]["text"] is None


def test_log_with_backticks_cannot_close_the_code_block(
    make_handler: Any, fake_github: FakeGitHub, log_server: dict[str, Any]
) -> None:
    log_server["log"] = "```\n# not a heading\n"
    call(make_handler(), status(state="failure", log_url=log_server["url"]))
    text = fake_github.runs_for("alice", "fn", SHA)[0]["output"]["text"]
    assert text.startswith("````text\n") and text.endswith("\n````")


@pytest.mark.parametrize(
    ("size", "truncated"),
    [(0, False), (65535 - 12, False), (65535 - 11, True), (300_000, True)],  # fences: 12
    ids=["empty", "exactly-fits", "one-over", "far-over"],
)
def test_format_log_fits_githubs_limit(make_handler: Any, size: int, truncated: bool) -> None:
    text = ("0123456789abcde\n" * (size // 16 + 1))[:size]
    formatted = make_handler().format_log(text)
    assert len(formatted) <= 65535
    assert formatted.startswith("**The build log was truncated**") is truncated
    assert formatted.endswith(text[-100:] + "\n```")


# -- the commit Status API ---------------------------------------------------------------------
def test_with_use_checks_false_a_commit_status_is_posted(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    result = call(
        make_handler(use_checks="false"),
        status(
            context="stack-deploy",
            state="success",
            description="stack is successfully deployed",
            target_url="https://system.example.com/dashboard/alice",
        ),
    )
    assert result["statusCode"] == 200
    (posted,) = fake_github.calls("POST", f"/statuses/{SHA}")
    assert posted.json == {
        "state": "success",
        "description": "stack is successfully deployed",
        "context": "stack-deploy",
        "target_url": "https://system.example.com/dashboard/alice",
    }
    assert fake_github.calls(path_contains="/check-runs") == []
    assert fake_github.violations == []


@pytest.mark.parametrize("use_checks", ["true", "false"], ids=["checks", "statuses"])
def test_description_is_cut_to_140_characters(
    make_handler: Any, fake_github: FakeGitHub, use_checks: str
) -> None:
    result = call(
        make_handler(use_checks=use_checks),
        status(state="failure", description="error: " + "y" * 400),
    )
    assert result["statusCode"] == 200
    if use_checks == "false":
        sent = fake_github.calls("POST", "/statuses/")[0].json["description"]
    else:
        sent = fake_github.calls("POST", "/check-runs")[0].json["output"]["summary"]
    assert len(sent) == 140 and sent.endswith("…")
    assert fake_github.violations == []


# -- GitHub's faults ----------------------------------------------------------------------------
def test_server_error_is_retried(make_handler: Any, fake_github: FakeGitHub) -> None:
    fake_github.fail_next(1, status=500, path_contains="/check-runs")
    result = call(make_handler(), status())
    assert result["statusCode"] == 200
    assert len(fake_github.calls("GET", "/check-runs")) == 2
    assert len(fake_github.runs_for("alice", "fn", SHA)) == 1


def test_rate_limit_with_retry_after_is_retried(make_handler: Any, fake_github: FakeGitHub) -> None:
    fake_github.fail_next(1, status=403, retry_after=0.05, path_contains="/statuses/")
    result = call(make_handler(use_checks="false"), status())
    assert result["statusCode"] == 200
    assert [c.status for c in fake_github.calls("POST", "/statuses/")] == [403, 201]


def test_github_failing_every_attempt_answers_202(
    make_handler: Any, fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    fake_github.fail_next(3, status=503, path_contains="/check-runs")
    with caplog.at_level(logging.INFO):
        result = call(make_handler(), status())
    assert result["statusCode"] == 202
    assert "not reported" in json.loads(result["body"])["message"]
    assert "not reported" in caplog.text
    assert no_credentials_in(result["body"] + caplog.text, fake_github)


def test_github_unreachable_answers_202_not_5xx(
    monkeypatch: pytest.MonkeyPatch, secrets_dir: Path, fake_github: FakeGitHub
) -> None:
    handler = load_handler(
        FOLDER,
        {
            "secret_mount_path": str(secrets_dir),
            "github_app_id": "1",
            "github_api_url": f"http://127.0.0.1:{closed_port()}",
        },
        monkeypatch,
    )
    result = call(handler, status())
    assert result["statusCode"] == 202
    assert "cannot be reached" in json.loads(result["body"])["message"]


def test_refused_permission_answers_202(make_handler: Any, fake_github: FakeGitHub) -> None:
    fake_github.add_installation(2002, account="bob")
    result = call(make_handler(), status(installation_id=2002))
    assert result["statusCode"] == 202
    assert "Resource not accessible by integration" in result["body"]


def test_status_without_installation_id_answers_202(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    result = call(make_handler(), status(installation_id=None))
    assert result["statusCode"] == 202
    assert fake_github.requests == []


def test_credentials_never_reach_the_answer_or_the_logs(
    make_handler: Any, fake_github: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    handler = make_handler()
    with caplog.at_level(logging.DEBUG):
        answers = [call(handler, status()), call(handler, status(state="success"))]
        fake_github.revoke_tokens()  # the next call sees a 401, mints again, then succeeds
        answers.append(call(handler, status(state="failure")))
        fake_github.fail_next(3, status=500)
        answers.append(call(make_handler(), status(state="error")))
    assert [a["statusCode"] for a in answers] == [200, 200, 200, 202]
    assert len(fake_github.minted_tokens) == 2  # so the check below is meaningful
    assert "minted a token for installation 1001" in caplog.text  # and the logs were captured
    assert no_credentials_in("".join(a["body"] for a in answers) + caplog.text, fake_github)
    assert SECRET not in caplog.text


# -- what callers get wrong --------------------------------------------------------------------
def test_bad_signature_is_401(make_handler: Any, fake_github: FakeGitHub) -> None:
    result = call(make_handler(), status(), secret="not-the-secret")
    assert result["statusCode"] == 401
    assert fake_github.requests == []


def test_missing_signature_is_401(make_handler: Any) -> None:
    event = Event(json.dumps(status()).encode(), {"Content-Type": "application/json"})
    assert make_handler().handle(event, Context())["statusCode"] == 401


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (json.dumps({k: v for k, v in status().items() if k != "sha"}).encode(), "sha is required"),
        (json.dumps(status(state="done")).encode(), "state must be one of"),
        (json.dumps(status(sha="abc")).encode(), "40-character"),
        (json.dumps(status(installation_id="1001")).encode(), "installation_id has the wrong type"),
        (json.dumps(status(context="")).encode(), "context is empty"),
    ],
    ids=[
        "empty",
        "not-json",
        "not-an-object",
        "missing-sha",
        "bad-state",
        "short-sha",
        "id-as-string",
        "empty-context",
    ],
)
def test_malformed_status_is_400_with_the_reason(
    make_handler: Any, fake_github: FakeGitHub, body: bytes, reason: str
) -> None:
    result = call(make_handler(), body)
    assert result["statusCode"] == 400
    assert reason in result["body"]
    assert fake_github.requests == []


def test_get_is_405(make_handler: Any) -> None:
    assert call(make_handler(), status(), method="GET")["statusCode"] == 405


# -- configuration ------------------------------------------------------------------------------
def test_without_a_github_app_statuses_are_accepted_and_dropped(make_handler: Any, fake_github: FakeGitHub) -> None:
    result = call(make_handler(github_app_id=""), status())
    assert result["statusCode"] == 202
    assert fake_github.requests == []


def test_report_status_false_accepts_and_drops(make_handler: Any, fake_github: FakeGitHub) -> None:
    result = call(make_handler(report_status="false", github_app_id=""), status())
    assert result["statusCode"] == 202
    assert "report_status is false" in result["body"]
    assert fake_github.requests == []


@pytest.mark.parametrize(
    ("env", "remove", "expected"),
    [
        ({"use_checks": "flase"}, None, "use_checks='flase'"),
        ({"github_api_url": "api.github.com"}, None, "github_api_url='api.github.com'"),
        ({}, "private-key", "secret 'private-key' is not mounted"),
        ({}, "payload-secret", "secret 'payload-secret' is not mounted"),
    ],
    ids=["bad-bool", "bad-url", "no-private-key", "no-payload-secret"],
)
def test_configuration_error_answers_500_naming_it_on_every_call(
    make_handler: Any, secrets_dir: Path, env: dict[str, str], remove: str | None, expected: str
) -> None:
    if remove:
        (secrets_dir / remove).unlink()
    handler = make_handler(**env)  # importing must not raise
    for _ in range(2):
        result = call(handler, status())
        assert result["statusCode"] == 500
        assert expected in result["body"]


def test_malformed_private_key_answers_500_without_the_key(
    make_handler: Any, secrets_dir: Path
) -> None:
    (secrets_dir / "private-key").write_text(
        "-----BEGIN RSA PRIVATE KEY-----\nnot really\n-----END RSA PRIVATE KEY-----\n"
    )
    result = call(make_handler(), status())
    assert result["statusCode"] == 500
    assert "private key is not an unencrypted PEM key" in result["body"]
    assert "not really" not in result["body"]


# -- deployed on the embedded gateway -----------------------------------------------------------
@pytest.mark.slow
def test_deployed_function_reports_a_stages_statuses_end_to_end(
    gateway: Any, fake_github: FakeGitHub
) -> None:
    """StatusReporter → gateway → github-status (built as faas-cli would) → GitHub."""
    ctx = gateway.state_dir.parent / "ctx-github-status"
    shutil.copytree(REPO / "template" / "python3-http", ctx)
    for item in (REPO / FOLDER).iterdir():
        if item.is_file():
            shutil.copy(item, ctx / "function" / item.name)
    shutil.copytree(
        REPO / "sdk", ctx / "function" / "sdk", ignore=shutil.ignore_patterns("__pycache__")
    )
    store = ArtifactStore(gateway.state_dir / "artifacts")
    store.tag("github-status:latest", store.put(ctx))
    client = gateway.client
    client.create_secret("payload-secret", SECRET.encode())
    client.create_secret("private-key", fake_github.private_key_pem.encode())
    client.deploy(
        FunctionDeployment(
            service="github-status",
            image="github-status:latest",
            env_vars={"github_app_id": fake_github.app_id, "github_api_url": fake_github.url},
            secrets=["payload-secret", "private-key"],
        )
    )
    gateway.wait_ready("github-status", timeout=300)

    reporter = StatusReporter(GatewayClient(gateway.url), SECRET, enabled=True)
    reporter.report(CommitStatus.from_json(status()))
    reporter.report(
        CommitStatus.from_json(status(state="success", description="deployed: alice-hello"))
    )

    (run,) = fake_github.runs_for("alice", "fn", SHA)
    assert (run["name"], run["status"], run["conclusion"]) == ("hello", "completed", "success")
    assert len(fake_github.calls("POST", "/check-runs")) == 1
    assert len(fake_github.calls("PATCH", "/check-runs/")) == 1
    assert fake_github.violations == []
    assert no_credentials_in(gateway.logs(), fake_github)


def test_every_status_is_kept_in_pipeline_log_even_without_github(
    make_handler: Any, fake_github: FakeGitHub
) -> None:
    with Recorder(lambda request: (200, b"stored")) as pipeline_log:
        handler = make_handler(
            pipeline_log_url=f"{pipeline_log.url}/function/pipeline-log", github_app_id=""
        )
        body = status(installation_id=None, state="failure", description="build failed: tests")
        result = call(handler, body)

    assert result["statusCode"] == 202  # nowhere on GitHub to report it
    (kept,) = pipeline_log.received
    assert (kept.method, kept.path) == ("POST", "/function/pipeline-log/status")
    assert verify(kept.body, kept.headers["X-Cloud-Signature"], SECRET)
    assert kept.json() == {**body, "installation_id": None}
    assert fake_github.calls() == []
