"""Who can reach what through the router: users' functions at their own host only, the
platform's functions only by their explicit routes, nothing under the gateway's
``/system/`` or ``/async-function/`` at all, and the dashboard only with a session.

A real router in front of a real gateway (see conftest.py for the deployed functions);
edge-auth is a stand-in answering ``/q/`` from the session cookie.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sdk.tokens import generate_keypair, issue_token, token_audience, token_issuer
from tests.auth.conftest import launch
from tests.conftest import RunningGateway
from tests.fakes.github import REST_SPEC, SPECS_MISSING, FakeGitHub
from tests.helpers import stop_pid, wait_until
from tests.router.conftest import (
    FORBIDDEN_SESSION,
    GOOD_SESSION,
    OWNER,
    PROBE_HANDLER,
    RunningRouter,
    StandIn,
    gateway_secrets,
)

SESSION = "openfaas_cloud_token"


def seen(response: requests.Response) -> dict:  # type: ignore[type-arg]
    assert response.status_code == 200, response.text
    return dict(response.json())


def basic_auth(gw: RunningGateway) -> str:
    user, password = gw.credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- users' functions ------------------------------------------------------------------------------


def test_user_function_is_reached_at_the_users_subdomain(router: RunningRouter) -> None:
    response = router.get(router.host("alice"), "/probe")

    assert response.headers.get("X-Function") == "probe"
    assert seen(response)["path"] == "/"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"], ids=["bare-domain", "ip-literal"])
def test_user_function_is_reached_path_style_on_the_bare_domain(
    router: RunningRouter, host: str
) -> None:
    response = router.get(f"{host}:{router.port}", "/alice/probe/deep/path")

    assert seen(response)["path"] == "/deep/path"


def test_user_function_is_reached_whatever_the_case_of_the_owner_label(
    router: RunningRouter,
) -> None:
    # alice-probe's owner label says "Alice"; hosts are lower case.
    assert seen(router.get(router.host("ALICE"), "/probe"))["method"] == "GET"


@pytest.mark.parametrize(
    ("host", "target", "names"),
    [
        ("nobody", "/probe", "nobody"),
        ("alice", "/missing", "missing"),
        ("alice", "/", "no function named"),
        ("", "/", "no function named"),
        ("nolabel", "/probe", "nolabel"),
    ],
    ids=["unknown-user", "unknown-function", "no-function-in-url", "bare-root", "no-owner-label"],
)
def test_unknown_user_or_function_answers_404_naming_it(
    router: RunningRouter, host: str, target: str, names: str
) -> None:
    response = router.get(router.host(host), target)

    assert response.status_code == 404
    assert names in response.text
    assert response.headers.get("X-OpenFaaS-Internal") == "router"


def test_unknown_host_answers_404_naming_it(router: RunningRouter) -> None:
    response = router.get(f"functions.example.org:{router.port}", "/probe")

    assert response.status_code == 404
    assert "functions.example.org" in response.text


def test_user_cannot_reach_another_users_function_through_their_own_host(
    router: RunningRouter,
) -> None:
    # bob-probe exists, so does alice-probe: bob's host only ever names bob-<fn>.
    assert seen(router.get(router.host("bob"), "/probe"))["method"] == "GET"

    for target in ("/alice-probe", "/../alice/probe", "/probe/../../alice/probe"):
        response = router.get(router.host("bob"), target)
        assert response.status_code in (400, 404), (target, response.text)
        assert response.headers.get("X-Function") is None


@pytest.mark.parametrize(
    ("host", "target"),
    [("al-ice", "/hello"), ("al", "/ice-cream")],
    ids=["al-ice-owns-al-ice-hello", "al-owns-al-ice-cream"],
)
def test_deployed_name_shared_by_two_users_is_reached_by_its_owner_only(
    router: RunningRouter, host: str, target: str
) -> None:
    # al + ice-hello and al-ice + hello are both deployed as al-ice-hello: only the
    # owner label decides who reaches it (and likewise for al-ice-cream).
    assert seen(router.get(router.host(host), target))["method"] == "GET"


@pytest.mark.parametrize(
    ("host", "target"),
    [("al", "/ice-hello"), ("al-ice", "/cream")],
    ids=["al-not-owner-of-al-ice-hello", "al-ice-not-owner-of-al-ice-cream"],
)
def test_deployed_name_shared_by_two_users_answers_404_to_the_other(
    router: RunningRouter, host: str, target: str
) -> None:
    response = router.get(router.host(host), target)

    assert response.status_code == 404
    assert response.headers.get("X-Function") is None


# -- platform functions and the gateway's API -----------------------------------------------------


def test_github_event_is_reached_at_its_system_route(router: RunningRouter) -> None:
    response = router.call("POST", router.host("system"), "/github-event", data=b"{}")

    assert seen(response)["method"] == "POST"


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("github", "/event"),
        ("alice", "/internal"),
        ("", "/github/event"),
        ("system", "/github-push"),
        ("system", "/function/github-event"),
        ("", "/system/github-event"),
    ],
    ids=["as-user-github", "owned-but-platform", "path-style-github", "other-platform-function",
         "function-prefix", "path-style-system"],
)  # fmt: skip
def test_platform_function_is_not_reached_by_any_other_route(
    router: RunningRouter, host: str, target: str
) -> None:
    response = router.get(router.host(host), target)

    assert response.status_code == 404, response.text
    assert response.headers.get("X-Function") is None


SYSTEM_TARGETS = [
    ("", "/system/functions"),
    ("", "//system/functions"),
    ("", "/%2Fsystem/functions"),
    ("", "/%73ystem/functions"),
    ("", "/x/../system/functions"),
    ("", "/x/%2e%2e/system/functions"),
    ("", "/x/..%2Fsystem/functions"),
    ("alice", "/probe/../../system/functions"),
    ("alice", "/probe/%2E%2E/%2E%2E/system/functions"),
    ("alice", "/..%2F..%2Fsystem%2Ffunctions"),
    ("alice", "//system/functions"),
    ("system", "/functions"),
    ("system", "/system/functions"),
    ("system", "//system/functions"),
    ("system", "/dashboard/../system/functions"),
    ("system", "/github-event/../../system/functions"),
    ("system", "/git/../system/functions"),
    ("auth.system", "/../system/functions"),
    ("", "/async-function/alice-probe"),
    ("alice", "/../async-function/alice-probe"),
    ("system", "/async-function/github-event"),
    ("", "/function/alice-probe"),
]


@pytest.mark.parametrize(
    ("host", "target"), SYSTEM_TARGETS, ids=[f"{h}{t}" for h, t in SYSTEM_TARGETS]
)
def test_gateway_api_is_not_reachable_in_any_encoding(
    router: RunningRouter, platform: RunningGateway, host: str, target: str
) -> None:
    # With the gateway's own credentials: if the request got through, it would answer.
    response = router.call(
        "GET", router.host(host), target, headers={"Authorization": basic_auth(platform)}
    )

    assert response.status_code in (400, 404), response.text
    assert response.headers.get("X-OpenFaaS-Internal") == "router"
    assert "alice-probe" not in response.text


def test_absolute_form_request_target_answers_400(
    router: RunningRouter, platform: RunningGateway
) -> None:
    request = (
        f"GET {platform.url}/system/functions HTTP/1.1\r\nHost: localhost:{router.port}\r\n"
        f"Authorization: {basic_auth(platform)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"alice-probe" not in answer


# -- functions deployed while the router runs -----------------------------------------------------


def test_function_deployed_after_the_router_started_is_reached_without_waiting(
    make_gateway: Callable[..., RunningGateway],
    make_router: Callable[..., RunningRouter],
) -> None:
    gw = make_gateway()
    # A refresh interval far beyond the test: only the refresh on a miss can find it.
    router = make_router(
        gw.url, OFC_ROUTER_GATEWAY_SECRETS_DIR=gateway_secrets(gw), OFC_ROUTER_REFRESH_INTERVAL="1h"
    )
    assert router.get(router.host("carol"), "/fresh").status_code == 404

    gw.deploy("carol-fresh", PROBE_HANDLER, labels={OWNER: "carol"})

    assert seen(router.get(router.host("carol"), "/fresh"))["method"] == "GET"


def test_removed_function_stops_being_reached(
    make_gateway: Callable[..., RunningGateway],
    make_router: Callable[..., RunningRouter],
) -> None:
    gw = make_gateway()
    gw.deploy("dave-gone", PROBE_HANDLER, labels={OWNER: "dave"})
    router = make_router(
        gw.url, OFC_ROUTER_GATEWAY_SECRETS_DIR=gateway_secrets(gw), OFC_ROUTER_REFRESH_INTERVAL="1s"
    )
    assert seen(router.get(router.host("dave"), "/gone"))["method"] == "GET"

    gw.client.remove("dave-gone")

    wait_until(
        lambda: router.get(router.host("dave"), "/gone").status_code == 404,
        10,
        "dave-gone to answer 404 through the router once removed",
    )


def test_function_list_unreachable_answers_503_saying_to_retry(
    make_router: Callable[..., RunningRouter],
) -> None:
    router = make_router("http://127.0.0.1:9")  # nothing listens on the discard port

    response = router.get(router.host("alice"), "/probe")

    assert response.status_code == 503
    assert "try again" in response.text


# -- the session cookie --------------------------------------------------------------------------


def test_session_cookie_is_taken_out_of_requests_to_users_functions(
    router: RunningRouter,
) -> None:
    cookie = f"theme=dark; {SESSION}={GOOD_SESSION}; lang=en"

    headers = seen(router.get(router.host("alice"), "/probe", headers={"Cookie": cookie}))[
        "headers"
    ]

    assert headers.get("cookie") == "theme=dark; lang=en"


def test_session_cookie_alone_leaves_no_cookie_header(router: RunningRouter) -> None:
    response = router.get(router.host("alice"), "/probe", headers={"Cookie": f"{SESSION}=x"})

    assert "cookie" not in seen(response)["headers"]


@pytest.mark.parametrize(
    "planted",
    [
        f"{SESSION}=planted; Domain=localhost; Path=/",
        f" {SESSION} =planted; Path=/",
        f"{SESSION}=; Max-Age=0",
    ],
    ids=["plain", "spaces-around-the-name", "clearing-it"],
)
def test_function_cannot_set_the_session_cookie(router: RunningRouter, planted: str) -> None:
    query = "?set-cookie=" + requests.utils.quote(planted) + "&set-cookie=theme%3Dlight"

    response = router.get(router.host("alice"), "/raw" + query)

    assert response.status_code == 200
    assert response.raw.headers.getlist("Set-Cookie") == ["theme=light"]


# -- the protected dashboard -----------------------------------------------------------------------


def test_dashboard_without_a_session_redirects_to_sign_in_with_the_url_to_return_to(
    router: RunningRouter,
) -> None:
    response = router.get(router.host("system"), "/dashboard/alice?tab=logs")

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http", f"auth.system.localhost:{router.port}", "/login",
    )  # fmt: skip
    assert parse_qs(location.query)["r"] == [
        f"http://system.localhost:{router.port}/dashboard/alice?tab=logs"
    ]


def test_dashboard_with_a_session_is_forwarded_with_the_cookie(
    router: RunningRouter, edge_auth: StandIn
) -> None:
    response = router.get(
        router.host("system"), "/dashboard/alice", headers={"Cookie": f"{SESSION}={GOOD_SESSION}"}
    )

    body = seen(response)
    assert body["path"] == "/alice"
    assert body["headers"]["cookie"] == f"{SESSION}={GOOD_SESSION}"
    assert any(target.startswith(b"/q/?r=") for target in edge_auth.targets())


def test_dashboard_assets_of_one_session_ask_edge_auth_once(
    router: RunningRouter, edge_auth: StandIn
) -> None:
    cookie = {"Cookie": f"{SESSION}={GOOD_SESSION}-of-the-asset-test"}  # not cached yet
    before = len(edge_auth.seen)

    for asset in ("/dashboard/", "/dashboard/app.js", "/dashboard/app.css", "/dashboard/logo"):
        assert router.get(router.host("system"), asset, headers=cookie).status_code == 200

    assert len(edge_auth.seen) - before == 1


def test_dashboard_with_two_session_cookies_is_never_answered_from_the_cache(
    router: RunningRouter, edge_auth: StandIn
) -> None:
    # edge-auth may judge either cookie: a "yes" must not be remembered for the other.
    both = {"Cookie": f"{SESSION}=forged; {SESSION}={GOOD_SESSION}-of-the-two-cookie-test"}
    before = len(edge_auth.seen)

    for _ in range(2):
        assert router.get(router.host("system"), "/dashboard/", headers=both).status_code == 200
    alone = router.get(
        router.host("system"), "/dashboard/", headers={"Cookie": f"{SESSION}=forged"}
    )

    assert len(edge_auth.seen) - before == 3
    assert alone.status_code == 302


def test_dashboard_with_a_forbidden_session_answers_403(router: RunningRouter) -> None:
    response = router.get(
        router.host("system"), "/dashboard/", headers={"Cookie": f"{SESSION}={FORBIDDEN_SESSION}"}
    )

    assert response.status_code == 403


def test_dashboard_post_without_a_session_answers_401_naming_the_sign_in_url(
    router: RunningRouter,
) -> None:
    response = router.call("POST", router.host("system"), "/dashboard/api", data=b"{}")

    assert response.status_code == 401
    assert f"auth.system.localhost:{router.port}/login" in response.text


def test_dashboard_when_edge_auth_is_down_answers_503(
    platform: RunningGateway, make_router: Callable[..., RunningRouter]
) -> None:
    router = make_router(platform.url, OFC_ROUTER_GATEWAY_SECRETS_DIR=gateway_secrets(platform))

    response = router.get(
        router.host("system"), "/dashboard/", headers={"Cookie": f"{SESSION}={GOOD_SESSION}"}
    )

    assert response.status_code == 503
    assert "try again" in response.text


def test_system_root_redirects_to_the_dashboard(router: RunningRouter) -> None:
    response = router.get(router.host("system"), "/")

    assert response.status_code == 307
    assert response.headers["Location"] == f"http://system.localhost:{router.port}/dashboard/"


def test_edge_auth_host_is_forwarded_as_is_with_the_cookie(
    router: RunningRouter, edge_auth: StandIn
) -> None:
    response = router.get(
        router.host("auth.system"), "/login?r=http%3A%2F%2Fx", headers={"Cookie": f"{SESSION}=t"}
    )

    assert response.text == "edge-auth page /login?r=http%3A%2F%2Fx"
    _, _, headers = edge_auth.seen[-1]
    assert headers[b"cookie"] == f"{SESSION}=t".encode()


def test_router_answers_its_own_health_check(router: RunningRouter) -> None:
    assert router.get(router.host(), "/healthz").text == "OK\n"
    assert router.call("POST", router.host(), "/healthz").status_code == 405


def test_router_metrics_are_not_served_on_a_users_host(router: RunningRouter) -> None:
    # /metrics is the router's own on the bare domain; on a user's host it names a function.
    response = router.get(router.host("alice"), "/metrics")

    assert response.status_code == 404
    assert "router_requests_total" not in response.text


def test_dashboard_through_the_real_edge_auth_needs_a_valid_token(
    platform: RunningGateway, make_router: Callable[..., RunningRouter], tmp_path: Path
) -> None:
    if not REST_SPEC.exists():
        pytest.skip(SPECS_MISSING)
    github = FakeGitHub().start()
    service = launch(tmp_path / "edge-auth", github, oauth=False)
    try:
        # edge-auth's tokens name the public port 8000; the router is told the same.
        router = make_router(platform.url, OFC_ROUTER_GATEWAY_SECRETS_DIR=gateway_secrets(platform),
                             OFC_AUTH_URL=service.url, OFC_PUBLIC_PORT="8000")  # fmt: skip
        claims = {"login": "alice", "name": "Alice", "orgs": [],
                  "issuer": token_issuer("http", "localhost", 8000),
                  "audience": token_audience("http", "localhost", 8000)}  # fmt: skip
        valid = issue_token(service.private_key, **claims)  # type: ignore[arg-type]
        forged = issue_token(generate_keypair()[0], **claims)  # type: ignore[arg-type]

        def dashboard(token: str) -> requests.Response:
            return router.get(router.host("system"), "/dashboard/", headers={"Cookie": f"{SESSION}={token}"})  # fmt: skip

        assert seen(dashboard(valid))["path"] == "/"
        assert dashboard(forged).status_code == 302
        assert router.get(router.host("system"), "/dashboard/").status_code == 302
    finally:
        stop_pid(service.proc)
        github.stop()
