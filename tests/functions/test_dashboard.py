"""dashboard: the real handler against a real gateway holding functions of several owners,
with pipeline-log deployed beside them from the root stack.yml, and session tokens issued
by sdk.tokens with a key pair made for the test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from sdk.events import PipelineLog
from sdk.signing import CLOUD_SIGNATURE, sign
from sdk.tokens import COOKIE_NAME, generate_keypair, issue_token
from tests.conftest import ECHO_HANDLER, REPO, RunningGateway, free_port
from tests.functions.conftest import Context, Event, load_handler, platform_secrets
from tests.helpers import Cli, Recorder

SECRET = "dashboard-payload-secret"
P = "com.openfaas.cloud."
ISSUER = "http://auth.system.localhost:8000"
AUDIENCE = "http://system.localhost:8000"
PRIVATE_KEY, PUBLIC_KEY = generate_keypair()
OTHER_PRIVATE_KEY, _ = generate_keypair()
URL_TEMPLATE = "http://{owner}.localhost:8000/{short_name}"
SHA_HELLO = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
SHA_OLD = "0123456789abcdef0123456789abcdef01234567"
EVIL = '<script>alert("x")</script>'
ENV_NAMES = (
    "gateway_url",
    "pipeline_log_url",
    "function_url_template",
    "public_domain",
    "public_scheme",
    "public_port",
    "dashboard_url",
    "secret_mount_path",
)
# Printed by alice-talker when it starts: a runtime log line that must be shown escaped.
TALKER = f"print({EVIL!r} + ' talker started', flush=True)\n" + ECHO_HANDLER


def labels(owner: str, repo: str, sha: str, deploytime: int, **extra: str) -> dict[str, str]:
    return {
        P + "git-owner": owner,
        P + "git-repo": repo,
        P + "git-sha": sha,
        P + "git-branch": "main",
        P + "git-deploytime": str(deploytime),
        P + "git-private": "0",
        **extra,
    }


def deploy_from_stack(gateway: RunningGateway, *functions: str, **env: str) -> None:
    """Deploy platform functions of the root stack.yml onto ``gateway`` with ``ofc deploy``,
    as ``ofc up`` does (same build contexts, environment and secrets)."""
    cli = Cli(gateway.state_dir, gateway.port, gateway.venv_dir, **env)
    filters = [arg for name in functions for arg in ("--filter", name)]
    cli.ok("deploy", "-f", str(REPO / "stack.yml"), *filters, timeout=900)


def store_build_log(
    gateway: RunningGateway, owner: str, repo: str, sha: str, function: str, text: str
) -> None:
    """Store a build log through pipeline-log, signed, as buildshiprun does."""
    record = PipelineLog(owner=owner, repo=repo, sha=sha, function=function, data=text)
    body = json.dumps(record.to_json()).encode()
    response = gateway.client.invoke(
        "pipeline-log", body, headers={CLOUD_SIGNATURE: sign(body, SECRET)}
    )
    assert response.status_code == 200, response.text


def session_cookie(login: str, orgs: tuple[str, ...] = (), **overrides: object) -> str:
    """A ``Cookie`` header with a session token for ``login``, as edge-auth would set it."""
    claims: dict = {
        "login": login,
        "name": login.title(),
        "orgs": list(orgs),
        "issuer": ISSUER,
        "audience": AUDIENCE,
    }
    key = overrides.pop("key", PRIVATE_KEY)
    claims.update(overrides)
    return f"theme=dark; {COOKIE_NAME}={issue_token(key, **claims)}"  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[RunningGateway]:
    """Functions of Alice (labelled in two spellings), her organisation acme, ``al``,
    ``alice-b`` (whose ``x`` is named ``alice-b-x``, like a stack key ``b-x`` of Alice's),
    bob, a system function labelled as Alice's, and pipeline-log from the root stack."""
    state = tmp_path_factory.mktemp("dashboard") / "state"
    state.mkdir()
    gw = RunningGateway(state, venv_dir, free_port(), {})
    gw.start()
    try:
        gw.client.create_secret("payload-secret", SECRET.encode())
        deploy_from_stack(gw, "pipeline-log")
        repo_url = {P + "git-repo-url": "https://github.com/Alice/fns"}
        gw.deploy(
            "alice-hello",
            ECHO_HANDLER,
            wait=False,
            labels=labels("Alice", "fns", SHA_HELLO, 1795251600),
            annotations=repo_url,
        )
        gw.deploy(
            "alice-old", ECHO_HANDLER, wait=False, labels=labels("alice", "fns", SHA_OLD, 100)
        )
        gw.deploy("alice-evil", ECHO_HANDLER, wait=False, labels=labels("alice", EVIL, SHA_OLD, 50))
        gw.deploy("acme-api", ECHO_HANDLER, wait=False, labels=labels("acme", "api", SHA_OLD, 200))
        gw.deploy("al-tool", ECHO_HANDLER, wait=False, labels=labels("al", "tools", SHA_OLD, 200))
        gw.deploy(
            "alice-b-x", ECHO_HANDLER, wait=False, labels=labels("alice-b", "x", SHA_OLD, 400)
        )
        gw.deploy("bob-secret", ECHO_HANDLER, wait=False, labels=labels("bob", "s", SHA_OLD, 300))
        gw.deploy(
            "alice-sys",
            ECHO_HANDLER,
            wait=False,
            labels=labels("alice", "fns", SHA_OLD, 500, role="openfaas-system"),
        )
        gw.deploy("alice-talker", TALKER, labels=labels("alice", "fns", SHA_OLD, 150))
        for _ in range(2):
            assert gw.client.invoke("alice-talker", b"hi").status_code == 200
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def secrets(tmp_path: Path, gateway: RunningGateway) -> Path:
    folder = platform_secrets(tmp_path / "secrets", gateway.credentials, SECRET)
    (folder / "jwt-public-key").write_bytes(PUBLIC_KEY)
    return folder


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, secrets: Path, gateway: RunningGateway):  # type: ignore[no-untyped-def]
    """``load(**env)``: import the dashboard with only ``env`` over the test's settings."""

    def load(**env: str) -> ModuleType:
        for name in ENV_NAMES:
            monkeypatch.delenv(name, raising=False)
        base = {
            "gateway_url": gateway.url,
            "secret_mount_path": str(secrets),
            "function_url_template": URL_TEMPLATE,
        }
        return load_handler("dashboard", {**base, **env}, monkeypatch)

    return load


@pytest.fixture
def fn(load) -> ModuleType:  # type: ignore[no-untyped-def]
    return load()


def get(
    fn: ModuleType, path: str, cookie: str | None = None, method: str = "GET", **query: str
) -> dict:
    headers = {"Cookie": cookie} if cookie else {}
    return fn.handle(Event(method=method, path=path, headers=headers, query=query), Context())


def alice() -> str:
    return session_cookie("Alice", ("acme",))


class Page(HTMLParser):
    """A page's visible text and links."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.parts: list[str] = []
        self._href: str | None = None
        self._link_text: list[str] = []
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        if tag == "a":
            self._href, self._link_text = dict(attrs).get("href") or "", []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1
        if tag == "a" and self._href is not None:
            self.links.append(("".join(self._link_text).strip(), self._href))
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data)
        if self._href is not None:
            self._link_text.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parts).split())

    def function_links(self) -> list[str]:
        """Links to function pages: ``owner/function``."""
        out = []
        for _, href in self.links:
            parts = href.removeprefix("/dashboard/").split("/")
            if href.startswith("/dashboard/") and len(parts) == 2:
                out.append(href.removeprefix("/dashboard/"))
        return out


def ok(reply: dict) -> Page:
    assert reply["statusCode"] == 200, reply["body"]
    assert reply["headers"]["Content-Type"] == "text/html; charset=utf-8"
    return Page(reply["body"])


# -- the overview -----------------------------------------------------------------------------------
def test_dashboard_lists_the_users_and_their_orgs_functions_grouped_by_owner(
    fn: ModuleType,
) -> None:
    page = ok(get(fn, "/", alice()))

    assert page.function_links() == [
        "alice/hello",
        "alice/talker",
        "alice/old",
        "alice/evil",
        "acme/api",
    ]
    body = get(fn, "/", alice())["body"]
    assert body.index('id="owner-alice"') < body.index('id="owner-acme"')
    assert "acme organisation" in page.text


def test_dashboard_never_lists_another_owner_whose_name_starts_with_the_users(
    fn: ModuleType,
) -> None:
    assert ok(get(fn, "/", session_cookie("al"))).function_links() == ["al/tool"]
    assert ok(get(fn, "/", session_cookie("alice-b"))).function_links() == ["alice-b/x"]


def test_dashboard_never_lists_platform_functions(fn: ModuleType) -> None:
    page = ok(get(fn, "/", alice()))
    assert "alice/sys" not in page.function_links()
    assert "pipeline-log" not in page.text


def test_dashboard_describes_each_function_in_the_list(fn: ModuleType) -> None:
    body = get(fn, "/", alice())["body"]
    row = next(r for r in body.split('<tr class="function">')[1:] if "/dashboard/alice/hello" in r)
    text = Page(row).text

    assert "http://alice.localhost:8000/hello" in text  # the public URL from the template
    assert "fns" in text
    assert SHA_HELLO[:7] in text and SHA_HELLO not in text
    assert "2026-11-21 09:00 UTC" in text
    assert "deployed" in text  # no build history from pipeline-log: the deployed commit
    assert "/1" in text  # replicas available/desired


def test_dashboard_shows_invocation_counts(fn: ModuleType) -> None:
    body = get(fn, "/", alice())["body"]
    row = next(r for r in body.split('<tr class="function">')[1:] if "/dashboard/alice/talker" in r)
    assert Page(row).text.endswith("1/1 2")  # replicas, then the two calls of the fixture


def test_dashboard_shows_a_users_org_without_functions_as_empty(fn: ModuleType) -> None:
    page = ok(get(fn, "/", session_cookie("al", ("emptyorg",))))
    assert "emptyorg organisation No functions yet" in page.text


def test_dashboard_owner_page_shows_only_that_owner(fn: ModuleType) -> None:
    assert ok(get(fn, "/acme", alice())).function_links() == ["acme/api"]
    assert ok(get(fn, "/ALICE", alice())).function_links()[0] == "alice/hello"


def test_dashboard_escapes_a_malicious_label(fn: ModuleType) -> None:
    body = get(fn, "/", alice())["body"]
    assert EVIL not in body
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in body


# -- one function -----------------------------------------------------------------------------------
def test_dashboard_function_page_shows_details_and_links_to_logs(fn: ModuleType) -> None:
    page = ok(get(fn, "/alice/hello", alice()))

    assert "URL http://alice.localhost:8000/hello" in page.text
    assert "Repository Alice/fns" in page.text
    assert f"Commit {SHA_HELLO}" in page.text
    assert ("Alice/fns", "https://github.com/Alice/fns") in page.links
    assert ("Runtime logs", "/dashboard/alice/hello/logs") in page.links
    # Without a build list from pipeline-log, the deployed commit is the one build shown.
    assert (f"build log {SHA_HELLO[:7]}", f"/dashboard/alice/hello/build/{SHA_HELLO}") in page.links


def test_dashboard_function_page_lists_builds_from_pipeline_log_signed(load) -> None:  # type: ignore[no-untyped-def]
    """pipeline-log's build list (``GET /builds``, proposed) drives the builds and the status."""
    newer = "f" * 40
    builds = {
        "builds": [{"sha": SHA_HELLO, "time": 1795251500}, {"sha": newer, "time": 1795251700}]
    }
    with Recorder(lambda request: (200, json.dumps(builds).encode())) as store:
        fn = load(pipeline_log_url=store.url)
        page = ok(get(fn, "/alice/hello", alice()))
        overview = ok(get(fn, "/alice", alice()))

    query = urlencode({"owner": "Alice", "repo": "fns", "function": "hello"})
    asked = store.received[0]
    assert asked.path == f"/builds?{query}"
    assert asked.headers[CLOUD_SIGNATURE] == sign(query.encode(), SECRET)
    build_links = [href for text, href in page.links if text.startswith("build log ")]
    assert build_links == [
        f"/dashboard/alice/hello/build/{newer}",
        f"/dashboard/alice/hello/build/{SHA_HELLO}",
    ]
    assert "Status newer build fffffff not deployed" in page.text
    assert "newer build fffffff not deployed" in overview.text


def test_dashboard_overview_leaves_a_late_build_list_out_of_the_status(load) -> None:  # type: ignore[no-untyped-def]
    """Build lists that arrive after the overview's budget leave the status at "deployed"."""
    late = {"builds": [{"sha": "f" * 40, "time": 1795251700}]}
    with Recorder(lambda request: (200, json.dumps(late).encode())) as store:
        fn = load(pipeline_log_url=store.url)
        # Slower than the page's budget, quicker than a read's own timeout.
        store.delay = fn.STATUS_BUDGET + 1.0
        assert store.delay < fn.PIPELINE_LOG_TIMEOUT
        page = ok(get(fn, "/alice", alice()))

    assert store.received  # it was asked
    assert "not deployed" not in page.text
    assert "deployed" in page.text


def test_dashboard_build_log_page_shows_the_stored_log_escaped(
    fn: ModuleType, gateway: RunningGateway
) -> None:
    store_build_log(gateway, "Alice", "fns", SHA_HELLO, "hello", f"Step 1/2\n{EVIL}\ndone\n")

    reply = get(fn, f"/alice/hello/build/{SHA_HELLO}", alice())

    page = ok(reply)
    assert f"Step 1/2 {EVIL} done" in page.text
    assert EVIL not in reply["body"]
    assert reply["headers"]["Cache-Control"] == "no-store"


def test_dashboard_build_log_of_a_commit_without_one_is_404_saying_so(fn: ModuleType) -> None:
    reply = get(fn, f"/alice/hello/build/{'9' * 40}", alice())
    assert reply["statusCode"] == 404
    assert "There is no build log of hello for commit 9999999" in Page(reply["body"]).text


def test_dashboard_runtime_logs_page_shows_the_functions_output_escaped(fn: ModuleType) -> None:
    reply = get(fn, "/alice/talker/logs", alice())

    page = ok(reply)
    assert f"{EVIL} talker started" in page.text
    assert EVIL not in reply["body"]
    assert reply["headers"]["Cache-Control"] == "no-store"


# -- access -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/bob",
        "/bob/secret",
        "/bob/secret/logs",
        f"/bob/secret/build/{SHA_OLD}",
        "/alice/b-x",  # deployed as alice-b-x, but alice-b's
        "/alice/sys",  # a platform function labelled as Alice's
        "/alice/missing",
        "/alice/hello/build/not-a-sha",
        "/alice/hello/other",
    ],
    ids=[
        "owner",
        "function",
        "logs",
        "build",
        "prefix-collision",
        "system",
        "absent",
        "bad-sha",
        "unknown-page",
    ],
)
def test_dashboard_pages_of_other_owners_are_404_like_absent_ones(
    fn: ModuleType, path: str
) -> None:
    reply = get(fn, path, alice())
    absent = get(fn, "/alice/never-deployed", alice())

    assert reply["statusCode"] == 404
    assert reply["body"] == absent["body"]
    assert "bob" not in Page(reply["body"]).text


def test_dashboard_owner_of_a_prefix_collision_sees_it(fn: ModuleType) -> None:
    assert "Deployed as alice-b-x" in ok(get(fn, "/alice-b/x", session_cookie("alice-b"))).text


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "theme=dark",
        f"{COOKIE_NAME}=not-a-token",
        session_cookie("Alice", ("acme",), key=OTHER_PRIVATE_KEY),
        session_cookie("Alice", ("acme",), now=time.time() - 7 * 86400, ttl=3600),
        session_cookie("Alice", ("acme",), audience="http://system.elsewhere:8000"),
        session_cookie("Alice", ("acme",), issuer="http://auth.elsewhere:8000"),
    ],
    ids=["none", "other-cookie", "garbage", "forged", "expired", "wrong-audience", "wrong-issuer"],
)
def test_dashboard_without_a_valid_session_redirects_to_sign_in(
    fn: ModuleType, cookie: str | None
) -> None:
    reply = get(fn, "/alice/hello/logs", cookie, tab="x y")

    assert reply["statusCode"] == 302
    location = urlsplit(reply["headers"]["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{ISSUER}/login"
    assert parse_qs(location.query) == {"r": [f"{AUDIENCE}/dashboard/alice/hello/logs?tab=x+y"]}
    assert "talker" not in reply["body"] and "hello" not in Page(reply["body"]).text
    assert reply["headers"]["Cache-Control"] == "no-store"


def test_dashboard_takes_the_valid_one_of_two_session_cookies(fn: ModuleType) -> None:
    stale = session_cookie("Alice", key=OTHER_PRIVATE_KEY).split("; ")[1]
    assert ok(get(fn, "/", f"{stale}; {alice()}")).function_links()[0] == "alice/hello"


def test_dashboard_public_addresses_follow_the_domain_settings(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(public_domain="example.com", public_scheme="https", public_port="443")
    token = session_cookie(
        "Alice", audience="https://system.example.com", issuer="https://auth.system.example.com"
    )

    redirect = get(fn, "/")
    page = get(fn, "/", token)

    assert redirect["headers"]["Location"] == (
        "https://auth.system.example.com/login?r=https%3A%2F%2Fsystem.example.com%2Fdashboard%2F"
    )
    assert ok(page).function_links()[0] == "alice/hello"


def test_dashboard_links_follow_its_configured_url(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(dashboard_url="http://127.0.0.1:8080/function/dashboard")

    page = ok(get(fn, "/", alice()))

    assert ("hello", "/function/dashboard/alice/hello") in page.links
    assert get(fn, "/x")["headers"]["Location"].endswith(
        "r=http%3A%2F%2F127.0.0.1%3A8080%2Ffunction%2Fdashboard%2Fx"
    )


# -- answers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/", "/alice/hello", "/alice/missing"], ids=["list", "function", "404"]
)
def test_dashboard_pages_carry_security_headers(fn: ModuleType, path: str) -> None:
    headers = get(fn, path, alice())["headers"]

    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'self'; style-src 'sha256-")
    assert "script-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_dashboard_refuses_other_methods(fn: ModuleType) -> None:
    reply = get(fn, "/", alice(), method="POST")
    assert (reply["statusCode"], reply["headers"]["Allow"]) == (405, "GET, HEAD")


def test_dashboard_with_the_gateway_down_answers_a_502_page_saying_so(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(gateway_url=f"http://127.0.0.1:{free_port()}")

    for path in ("/", "/alice/hello"):
        reply = get(fn, path, alice())
        assert reply["statusCode"] == 502
        assert "The gateway is not answering" in Page(reply["body"]).text


def test_dashboard_with_pipeline_log_down_shows_the_function_but_not_the_build_log(load) -> None:  # type: ignore[no-untyped-def]
    fn = load(pipeline_log_url=f"http://127.0.0.1:{free_port()}/function/pipeline-log")

    details = get(fn, "/alice/hello", alice())
    build = get(fn, f"/alice/hello/build/{SHA_HELLO}", alice())

    assert details["statusCode"] == 200
    assert build["statusCode"] == 502
    assert "Build logs are unavailable" in Page(build["body"]).text


def test_dashboard_without_its_public_key_answers_500_naming_the_secret(
    load, secrets: Path
) -> None:  # type: ignore[no-untyped-def]
    (secrets / "jwt-public-key").unlink()
    fn = load()

    reply = get(fn, "/", alice())

    assert reply["statusCode"] == 500
    assert "'jwt-public-key' is not mounted" in reply["body"]


def test_dashboard_with_a_public_key_that_is_not_one_answers_500_saying_so(
    load, secrets: Path
) -> None:  # type: ignore[no-untyped-def]
    (secrets / "jwt-public-key").write_text("-----BEGIN PUBLIC KEY-----\nnope\n")

    reply = get(load(), "/", alice())

    assert reply["statusCode"] == 500
    assert "'jwt-public-key' is not an EC public key in PEM" in reply["body"]
    assert "nope" not in reply["body"]


def test_dashboard_with_a_bad_setting_answers_500_naming_it(load) -> None:  # type: ignore[no-untyped-def]
    reply = get(load(public_scheme="ftp"), "/", alice())
    assert reply["statusCode"] == 500
    assert "public_scheme='ftp'" in reply["body"]
