"""The router's route table: where each Host and request-target goes (no processes)."""

from __future__ import annotations

import pytest

from router.routes import NotRouted, Route, RouteTable

TABLE = RouteTable("example.com")


@pytest.mark.parametrize(
    ("host", "target", "expected"),
    [
        ("alice.example.com", "/hello", Route("function", b"/function/alice-hello", "alice", "hello", "alice-hello")),
        ("alice.example.com:8000", "/hello/a/b?x=1&y=%20", Route("function", b"/function/alice-hello/a/b?x=1&y=%20", "alice", "hello", "alice-hello")),
        ("ALICE.Example.COM", "/hello?q", Route("function", b"/function/alice-hello?q", "alice", "hello", "alice-hello")),
        ("alice.example.com.", "//hello/", Route("function", b"/function/alice-hello/", "alice", "hello", "alice-hello")),
        ("alice.example.com", "/hello/a%2Fb", Route("function", b"/function/alice-hello/a%2Fb", "alice", "hello", "alice-hello")),
        ("example.com", "/alice/hello/x?y=1", Route("function", b"/function/alice-hello/x?y=1", "alice", "hello", "alice-hello")),
        ("example.com:8000", "/Alice/hello", Route("function", b"/function/alice-hello", "alice", "hello", "alice-hello")),
        ("127.0.0.1:8000", "/alice/hello", Route("function", b"/function/alice-hello", "alice", "hello", "alice-hello")),
        ("[::1]:8000", "/alice/hello", Route("function", b"/function/alice-hello", "alice", "hello", "alice-hello")),
        ("al.example.com", "/ice-hello", Route("function", b"/function/al-ice-hello", "al", "ice-hello", "al-ice-hello")),
        ("al-ice.example.com", "/hello", Route("function", b"/function/al-ice-hello", "al-ice", "hello", "al-ice-hello")),
        ("system.example.com", "/github-event", Route("github-event", b"/function/github-event")),
        ("system.example.com:443", "/github-event?x=1", Route("github-event", b"/function/github-event?x=1")),
        ("system.example.com", "/dashboard/app.js", Route("dashboard", b"/function/dashboard/app.js")),
        ("system.example.com", "/dashboard", Route("dashboard", b"/function/dashboard")),
        ("system.example.com", "/", Route("redirect")),
        ("system.example.com", "/git/alice/r.git/info/refs?service=git-upload-pack", Route("git", b"/git/alice/r.git/info/refs?service=git-upload-pack")),
        ("example.com", "/git/alice/r.git/git-receive-pack", Route("git", b"/git/alice/r.git/git-receive-pack")),
        ("auth.system.example.com", "/login?r=http%3A%2F%2Fx", Route("auth", b"/login?r=http%3A%2F%2Fx")),
        ("example.com", "/healthz", Route("healthz")),
        ("127.0.0.1", "/metrics", Route("metrics")),
        (None, "/healthz", Route("healthz")),
    ],
    ids=[
        "user-host", "port-path-query", "host-any-case", "trailing-dot-double-slash",
        "encoded-slash-kept-raw", "path-style", "path-style-user-any-case", "ipv4-path-style",
        "ipv6-path-style", "al-plus-ice-hello", "al-ice-plus-hello", "github-event",
        "github-event-query", "dashboard-asset", "dashboard-bare", "system-root", "system-git",
        "bare-git", "edge-auth", "healthz", "metrics-on-ip", "no-host-header",
    ],
)  # fmt: skip
def test_route_table_maps_host_and_target_to_upstream(
    host: str | None, target: str, expected: Route
) -> None:
    assert TABLE.route(host.encode() if host else None, target.encode()) == expected


@pytest.mark.parametrize(
    ("host", "target", "status", "says"),
    [
        ("other.org", "/hello", 404, "no such host"),
        ("a.b.example.com", "/hello", 404, "no such host"),
        ("www.example.com", "/hello", 404, "no such host"),
        ("git.example.com", "/x", 404, "no such host"),
        ("alice.example.com", "/", 404, "no function named"),
        ("alice.example.com", "/Hello", 404, "no function 'Hello'"),
        ("alice.example.com", "/hello%2Fx", 404, "no function"),
        ("alice_x.example.com", "/hello", 404, "no such user"),
        ("example.com", "/", 404, "no function named"),
        ("example.com", "/system/functions", 404, "/system"),
        ("example.com", "/dashboard/x", 404, "/dashboard"),
        ("system.example.com", "/functions", 404, "system.example.com serves"),
        ("system.example.com", "/function/github-push", 404, "system.example.com serves"),
        ("example.com", "http://127.0.0.1:8080/system/functions", 400, "path starting with /"),
        ("example.com", "*", 400, "path starting with /"),
        ("alice.example.com", "/hello/../../system/functions", 400, "'..'"),
        ("alice.example.com", "/hello/%2e%2e/%2E%2E/system/functions", 400, "'..'"),
        ("alice.example.com", "/hello/..%2f..%2fsystem", 400, "'..'"),
        ("alice.example.com", "/hello/..\\..\\system", 400, "'..'"),
        ("alice.example.com", "/./hello", 400, "'.'"),
    ],
    ids=[
        "other-domain", "nested-subdomain", "reserved-www", "reserved-git", "user-root",
        "upper-case-function", "encoded-slash-in-name", "invalid-user", "bare-root",
        "bare-system", "bare-dashboard", "system-other", "system-platform-function",
        "absolute-form", "asterisk-form", "dot-dot", "encoded-dot-dot", "dot-dot-encoded-slash",
        "dot-dot-backslash", "dot",
    ],
)  # fmt: skip
def test_route_table_refuses_what_goes_nowhere_naming_it(
    host: str, target: str, status: int, says: str
) -> None:
    with pytest.raises(NotRouted) as refused:
        TABLE.route(host.encode(), target.encode())

    assert (refused.value.status, says in refused.value.message) == (status, True), (
        refused.value.message
    )


@pytest.mark.parametrize(
    "target",
    ["/alice/hello", "/alice/hello/system/functions", "/x/y/async-function/z", "/a/b%2F%2E%2E"],
)
def test_route_table_only_ever_targets_a_function_or_a_service_path(target: str) -> None:
    for host in (b"alice.example.com", b"example.com", b"system.example.com"):
        try:
            route = TABLE.route(host, target.encode())
        except NotRouted:
            continue
        assert route.target.startswith((b"/function/", b"/git")), route


def test_route_table_remembers_a_route_and_answers_the_same() -> None:
    table = RouteTable("example.com")

    first = table.route(b"alice.example.com", b"/hello")
    again = table.route(b"alice.example.com", b"/hello")

    assert first is again


def test_targets_a_client_varies_are_not_remembered() -> None:
    # Every distinct query (or a long path) is a new target: remembering them would let a
    # client fill the router's memory with its own bytes.
    table = RouteTable("localhost")
    for i in range(50):
        route = table.route(b"alice.localhost", b"/hello?" + b"q" * 10_000 + str(i).encode())
        assert route.name == "alice-hello"
    table.route(b"alice.localhost", b"/hello/" + b"p" * 1000)
    table.route(b"alice.localhost", b"/hello")
    assert len(table._memo) == 1
