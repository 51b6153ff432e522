"""What passes through the router unchanged, what it sets, how it streams, and how it
answers when an upstream fails; its metrics and access log.

A real router in front of a real gateway (see conftest.py), and stand-ins for the git
remote (streaming, stalling and breaking upstreams).
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import RunningGateway
from tests.helpers import read_proc, stop_pid, wait_until
from tests.router.conftest import (
    Hangup,
    RunningRouter,
    StandIn,
    gateway_secrets,
    git_answer,
    pattern_bytes,
)

MB = 1024 * 1024


def seen(response: requests.Response) -> dict:  # type: ignore[type-arg]
    assert response.status_code == 200, response.text
    return dict(response.json())


def wire_headers(response: requests.Response) -> dict[str, str]:
    """Headers as the raw function (a bare http.server) received them."""
    return {k: v for k, v in seen(response)["headers"]}


# -- what passes through -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
def test_method_reaches_the_function(router: RunningRouter, method: str) -> None:
    response = router.call(method, router.host("alice"), "/probe", data=b"x")

    assert response.headers["X-Seen-Method"] == method


@pytest.mark.parametrize(
    ("target", "raw_uri"),
    [
        ("/probe/a%2Fb/c?x=1&x=2&y=%20z", "/a%2Fb/c?x=1&x=2&y=%20z"),
        ("/probe?q=%E2%9C%93&empty=", "/?q=%E2%9C%93&empty="),
        ("/probe//double//slash", "//double//slash"),
    ],
    ids=["encoded-slash-and-query", "utf8-query", "double-slashes"],
)
def test_raw_path_and_query_reach_the_function_as_sent(
    router: RunningRouter, target: str, raw_uri: str
) -> None:
    assert seen(router.get(router.host("alice"), target))["raw_uri"] == raw_uri


def test_request_headers_pass_and_hop_by_hop_ones_do_not(router: RunningRouter) -> None:
    response = router.get(
        router.host("alice"),
        "/raw",
        headers={
            "X-Custom": "kept",
            "Authorization": "Bearer user-token",
            "Connection": "keep-alive, X-Drop-Me",
            "X-Drop-Me": "listed in Connection",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic eA==",
        },
    )

    headers = wire_headers(response)
    assert headers["x-custom"] == "kept"
    assert headers["authorization"] == "Bearer user-token"
    for dropped in ("x-drop-me", "keep-alive", "te", "proxy-authorization"):
        assert dropped not in headers, dropped


def test_forwarding_headers_are_set_by_the_router_over_the_clients(
    router: RunningRouter,
) -> None:
    response = router.get(
        router.host("alice"),
        "/raw",
        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                 "X-Forwarded-Host": "evil.example"},
    )  # fmt: skip

    headers = wire_headers(response)
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == f"alice.localhost:{router.port}"
    assert headers["x-forwarded-proto"] == "http"


def test_function_status_and_headers_come_back(router: RunningRouter) -> None:
    response = router.get(router.host("alice"), "/probe?status=418")

    assert response.status_code == 418
    assert response.headers["X-Function"] == "probe"
    assert response.headers.get("X-Call-Id")  # the gateway's, passed on
    assert "X-OpenFaaS-Internal" not in response.headers


def test_head_answer_has_the_length_and_no_body(router: RunningRouter) -> None:
    get = router.get(router.host("alice"), "/raw")
    head = router.call("HEAD", router.host("alice"), "/raw")

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    # The connection stays usable: the next answer is not taken for HEAD's body.
    assert seen(router.get(router.host("alice"), "/raw"))["target"] == "/"


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_status_comes_back_without_a_body(router: RunningRouter, status: int) -> None:
    response = router.get(router.host("alice"), f"/raw?status={status}")

    assert response.status_code == status
    assert response.content == b""
    if status == 304:
        assert response.headers["ETag"] == '"v1"'
    else:
        assert response.headers["X-Empty"] == "yes"


def test_30_mb_body_round_trips_to_a_function_intact(router: RunningRouter) -> None:
    body = random.Random(5).randbytes(30 * MB)

    sent = seen(router.call("POST", router.host("alice"), "/probe", data=body))

    assert (sent["length"], sent["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
    down = router.get(router.host("alice"), f"/probe?bytes={30 * MB}")
    assert down.content == b"x" * (30 * MB)


def _peak_rss_kb(pid: int) -> int:
    status = read_proc(f"/proc/{pid}/status").decode()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]


def test_64_mb_bodies_stream_each_way_without_being_held_whole(
    make_router: Callable[..., RunningRouter],
) -> None:
    total = 64 * MB
    piece = random.Random(7).randbytes(MB)

    def upload() -> Iterator[bytes]:
        for _ in range(total // MB):
            yield piece

    with StandIn(git_answer) as git:
        router = make_router("http://127.0.0.1:9", OFC_GIT_URL=git.url)
        router.get(router.host(), "/git/warm-up")
        before = _peak_rss_kb(router.proc.pid)

        up = requests.post(f"{router.url}/git/upload", data=upload(), timeout=120,
                           headers={"Host": router.host()})  # fmt: skip
        downloaded = hashlib.sha256()
        received = 0
        with requests.get(f"{router.url}/git/bytes?n={total}", headers={"Host": router.host()},
                          stream=True, timeout=120) as down:  # fmt: skip
            for chunk in down.iter_content(256 * 1024):
                downloaded.update(chunk)
                received += len(chunk)

        grown_mb = (_peak_rss_kb(router.proc.pid) - before) / 1024

    assert up.text == f"{total} {hashlib.sha256(piece * (total // MB)).hexdigest()}"
    assert (received, downloaded.hexdigest()) == (
        total, hashlib.sha256(pattern_bytes(total)).hexdigest(),
    )  # fmt: skip
    assert grown_mb < 16, f"the router's peak memory grew by {grown_mb:.0f} MB"


# -- upstream failures ---------------------------------------------------------------------------------


def test_gateway_refusing_connections_answers_502_saying_what_to_do(
    make_router: Callable[..., RunningRouter],
) -> None:
    router = make_router("http://127.0.0.1:9")  # nothing listens there

    response = router.call("POST", router.host("system"), "/github-event", data=b"{}")

    assert response.status_code == 502
    assert response.headers["X-OpenFaaS-Internal"] == "router"
    assert "try again" in response.text
    assert "127.0.0.1:9" not in response.text  # internal addresses stay in the log


def test_upstream_closing_without_an_answer_answers_502(
    make_router: Callable[..., RunningRouter],
) -> None:
    with Hangup() as hangup:
        router = make_router("http://127.0.0.1:9", OFC_GIT_URL=hangup.url)

        response = router.get(router.host(), "/git/alice/repo.git/info/refs")

    assert response.status_code == 502
    assert "broke off" in response.text


def test_upstream_breaking_off_a_small_answer_answers_502(
    make_router: Callable[..., RunningRouter],
) -> None:
    # Small answers are read whole before they are passed on: the break is still news.
    with StandIn(git_answer) as git:
        router = make_router("http://127.0.0.1:9", OFC_GIT_URL=git.url)

        response = router.get(router.host(), f"/git/cut?n={100 * 1024}")

    assert response.status_code == 502


def test_upstream_breaking_off_a_streamed_answer_cuts_it_short(
    make_router: Callable[..., RunningRouter],
) -> None:
    # Past the headers the status is sent: only cutting the connection tells the client.
    with StandIn(git_answer) as git:
        router = make_router("http://127.0.0.1:9", OFC_GIT_URL=git.url)

        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(f"{router.url}/git/cut?n={10 * MB}", headers={"Host": router.host()},
                         timeout=30)  # fmt: skip


def test_upstream_slower_than_the_timeout_answers_504(
    make_router: Callable[..., RunningRouter],
) -> None:
    with StandIn(git_answer) as git:
        router = make_router(
            "http://127.0.0.1:9", OFC_GIT_URL=git.url, OFC_ROUTER_UPSTREAM_TIMEOUT="1s"
        )
        started = time.monotonic()
        response = router.get(router.host(), "/git/slow")
        elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert "within 1 s" in response.text
    assert elapsed < 2.5  # the stand-in answers after 3 s: the router gave up first


def test_gateway_errors_pass_through_unchanged(router: RunningRouter) -> None:
    response = router.get(router.host("alice"), "/probe?status=503")

    assert response.status_code == 503
    assert "X-OpenFaaS-Internal" not in response.headers


# -- git remote ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["system", ""], ids=["system-host", "bare-domain"])
def test_git_paths_reach_the_git_remote_unchanged(
    router: RunningRouter, git_remote: StandIn, host: str
) -> None:
    target = "/git/alice/my-fns.git/info/refs?service=git-upload-pack"

    response = router.get(router.host(host), target, headers={"Authorization": "Basic eDp5"})

    assert response.text == "git " + target
    _, _, headers = git_remote.seen[-1]
    assert headers[b"authorization"] == b"Basic eDp5"


# -- metrics and access log ----------------------------------------------------------------------------


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_route_and_status_class(router: RunningRouter) -> None:
    ok = 'router_requests_total{route="function",code="2xx"}'
    missing = 'router_requests_total{route="function",code="4xx"}'
    latency = 'router_upstream_seconds_count{upstream="gateway"}'
    before = router.metrics()

    for _ in range(3):
        router.get(router.host("alice"), "/probe")
    router.get(router.host("alice"), "/no-such-function")

    after = router.metrics()
    assert _metric(after, ok) - _metric(before, ok) == 3
    assert _metric(after, missing) - _metric(before, missing) == 1
    assert _metric(after, latency) - _metric(before, latency) == 3
    assert _metric(after, 'router_function_list_refreshes_total{trigger="interval",outcome="ok"}')
    assert _metric(after, "router_function_list_functions") >= 5


def test_access_log_has_one_line_per_request_without_the_query(router: RunningRouter) -> None:
    marker = f"/probe/logged-{time.monotonic_ns()}"

    router.get(router.host("alice"), marker + "?token=s3cret-query-value")

    def logged() -> list[str]:
        lines = router.access_log.read_text().splitlines() if router.access_log.exists() else []
        return [line for line in lines if marker in line]

    (line,) = wait_until(logged, 5, "the request's line in the access log (flushed each second)")
    when, client, host, method, path, status, sent, ms = line.split(" ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when)
    assert (client, host, method, path, status) == (
        "127.0.0.1", f"alice.localhost:{router.port}", "GET", marker, "200",
    )  # fmt: skip
    assert int(sent) > 0 and float(ms) > 0
    assert "s3cret" not in router.access_log.read_text()


def test_access_log_is_flushed_when_the_router_stops(
    platform: RunningGateway, make_router: Callable[..., RunningRouter]
) -> None:
    router = make_router(platform.url, OFC_ROUTER_GATEWAY_SECRETS_DIR=gateway_secrets(platform))
    for _ in range(5):
        router.get(router.host("alice"), "/probe/at-exit")

    stop_pid(router.proc)  # well within the one second a line may wait in the buffer

    lines = [line for line in router.access_log.read_text().splitlines() if "/at-exit" in line]
    assert len(lines) == 5
