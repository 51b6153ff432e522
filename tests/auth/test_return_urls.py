"""Where ``/login?r=`` may send the browser after signing in: the platform, never another site."""

from __future__ import annotations

import pytest

from tests.auth.conftest import AUDIENCE, EdgeAuth, query

REFUSED = {
    "scheme-relative": "//evil.example/",
    "triple-slash": "///evil.example/",
    "slash-backslash": "/\\evil.example/",
    "backslashes": "\\\\evil.example/",
    "other-host": "https://evil.example/",
    "userinfo": "https://localhost@evil.example/",
    "userinfo-with-port": "https://localhost:8000@evil.example/",
    "userinfo-subdomain": "http://system.localhost:8000@evil.example/dashboard/",
    "suffix-without-dot": "https://evillocalhost/",
    "domain-as-label": "https://localhost.evil.example/",
    "domain-in-path": "https://evil.example/.localhost",
    "encoded-slash-in-host": "https://evil.example%2f.localhost/",
    "trailing-dot": "https://evil.example./",
    "javascript": "javascript:alert(document.cookie)",
    "javascript-mixed-case": "JaVaScRiPt://localhost/%0aalert(1)",
    "data": "data:text/html,<script>alert(1)</script>",
    "https-without-slashes": "https:evil.example",
    "http-slash-backslash": "http:/\\evil.example",
    "tab-in-path": "/\t/evil.example/",
    "newline": "/\n/evil.example/",
    "leading-space": " //evil.example/",
    "ftp": "ftp://localhost/",
    "ipv6": "http://[::1]:8000/",
    "bad-port": "https://localhost:99999/",
    "not-a-path": "dashboard/",
    "non-ascii": "/caf\u00e9",
    "too-long": "/" + "a" * 3000,
}

ACCEPTED = {
    "path": ("/dashboard/alice?x=1", f"{AUDIENCE}/dashboard/alice?x=1"),
    "user-subdomain": ("http://alice.localhost:8000/hello", "http://alice.localhost:8000/hello"),
    "system-https-default-port": (
        "https://system.localhost/dashboard/",
        "https://system.localhost/dashboard/",
    ),
    "bare-domain-path-style": ("http://localhost:8000/alice/fn", "http://localhost:8000/alice/fn"),
    "upper-case": ("HTTP://SYSTEM.LOCALHOST:8000/x", "http://system.localhost:8000/x"),
    "at-sign-in-query": ("http://localhost:8000/?a=@evil", "http://localhost:8000/?a=@evil"),
}


@pytest.mark.parametrize("r", REFUSED.values(), ids=REFUSED.keys())
def test_login_with_a_return_url_off_the_platform_is_refused_400(
    edge_auth: EdgeAuth, r: str
) -> None:
    answer = edge_auth.get("/login", params={"r": r})

    assert answer.status_code == 400
    assert "return URL" in answer.text
    assert "Location" not in answer.headers
    assert "ofc_auth_login" not in edge_auth.cookies  # no sign-in was started


@pytest.mark.parametrize(("r", "expected"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_sign_in_returns_to_a_url_of_the_platform(
    edge_auth: EdgeAuth, r: str, expected: str
) -> None:
    edge_auth.github.sign_in("alice")

    answer = edge_auth.sign_in(r)

    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"] == expected


def test_login_sends_the_callback_url_of_the_public_address(edge_auth: EdgeAuth) -> None:
    answer = edge_auth.start_login("/dashboard/")

    assert query(answer.headers["Location"])["redirect_uri"] == (
        "http://auth.system.localhost:8000/callback"
    )
