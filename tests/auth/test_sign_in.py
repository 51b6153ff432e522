"""Signing in with GitHub through edge-auth, hop by hop, as a browser does it: the state,
the code exchange, the allow-list, the session cookie and the token in it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

from auth.state import StateSigner, derive_state_key
from sdk.tokens import COOKIE_NAME, verify_token
from tests.auth.conftest import AUDIENCE, CALLBACK, ISSUER, EdgeAuth, query, set_cookies

StartEdgeAuth = Callable[..., EdgeAuth]


def payload_of(token: str) -> dict[str, object]:
    part = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def exchanges(auth: EdgeAuth) -> int:
    return len(auth.github.calls("POST", "/login/oauth/access_token"))


def test_sign_in_sets_the_session_cookie_and_returns_to_r(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("Alice", orgs=["acme-org", "other-org"], name="Alice Example")

    login = auth.start_login("http://alice.localhost:8000/hello?name=Ann")
    assert login.status_code == 302
    authorize = login.headers["Location"]
    assert authorize.startswith(f"{auth.github.url}/login/oauth/authorize?")
    params = query(authorize)
    assert params["client_id"] == auth.oauth_app.client_id  # type: ignore[union-attr]
    assert params["redirect_uri"] == CALLBACK
    assert params["scope"] == "read:org"
    assert params["state"]

    callback = auth.authorize(authorize)
    assert query(callback)["state"] == params["state"]
    answer = auth.get(callback)

    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"] == "http://alice.localhost:8000/hello?name=Ann"
    cookie = set_cookies(answer)[COOKIE_NAME]
    assert cookie["domain"] == "system.localhost"  # browsers refuse Domain=localhost
    assert cookie["path"] == "/"
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert not cookie["secure"]  # http: a Secure cookie would never be sent back
    assert cookie["max-age"] == str(48 * 3600)

    identity = verify_token(cookie.value, auth.public_key, issuer=ISSUER, audience=AUDIENCE)
    assert identity.login == "Alice"
    assert identity.name == "Alice Example"
    assert identity.orgs == ("acme-org", "other-org")
    assert 48 * 3600 - 60 < identity.expires - time.time() <= 48 * 3600
    claims = payload_of(cookie.value)
    assert set(claims) == {"sub", "name", "orgs", "iss", "aud", "iat", "nbf", "exp"}
    [github_token] = auth.github.oauth_tokens
    assert github_token not in json.dumps(claims) and github_token not in answer.text
    assert auth.github.violations == []


def test_code_exchange_sends_the_apps_credentials_and_the_callback_url(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")

    assert auth.sign_in().status_code == 302

    [exchange] = auth.github.calls("POST", "/login/oauth/access_token")
    assert exchange.headers["Accept"] == "application/json"
    assert exchange.json["client_id"] == auth.oauth_app.client_id  # type: ignore[union-attr,index]
    assert (
        exchange.json["client_secret"] == "***"
    )  # sent (the fake masks it in its record)  # type: ignore[index]
    assert exchange.json["redirect_uri"] == CALLBACK  # type: ignore[index]
    assert exchange.query == {}  # nothing secret in the URL
    assert [c.path for c in auth.github.calls("GET")] == [
        "/login/oauth/authorize",
        "/user",
        "/user/orgs",
    ]


def test_sign_in_without_r_returns_to_the_dashboard(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")

    answer = auth.sign_in(r=None)

    assert answer.status_code == 302
    assert answer.headers["Location"] == f"{AUDIENCE}/dashboard/"


def test_sign_in_without_a_name_on_github_uses_the_login(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice", name=None)

    answer = auth.sign_in()

    token = set_cookies(answer)[COOKIE_NAME].value
    assert verify_token(token, auth.public_key, issuer=ISSUER, audience=AUDIENCE).name == "alice"


def test_sign_in_by_a_member_of_a_customer_organisation_is_accepted(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    # More organisations than GitHub lists on one page; the customer is on the second.
    orgs = [f"org-{i:03d}" for i in range(120)] + ["ACME-org"]
    auth.github.sign_in("bob", orgs=orgs)

    answer = auth.sign_in()

    assert answer.status_code == 302, answer.text
    token = set_cookies(answer)[COOKIE_NAME].value
    identity = verify_token(token, auth.public_key, issuer=ISSUER, audience=AUDIENCE)
    assert identity.orgs == tuple(orgs)


def test_sign_in_by_someone_not_on_the_customers_list_is_refused_403_without_a_cookie(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("mallory", orgs=["evil-org"])

    answer = auth.sign_in()

    assert answer.status_code == 403
    assert "mallory" in answer.text and "customers list" in answer.text
    assert COOKIE_NAME not in set_cookies(answer)
    assert COOKIE_NAME not in auth.cookies


def test_sign_in_without_a_customers_list_admits_any_github_user(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth(customers_path="", validate_customers="false")
    auth.github.sign_in("mallory")

    assert auth.sign_in().status_code == 302


def test_callback_replaying_a_used_state_is_refused_and_its_code_not_exchanged(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    login = auth.start_login()
    nonce_cookie = dict(auth.cookies)
    assert auth.get(auth.authorize(login.headers["Location"])).status_code == 302
    assert exchanges(auth) == 1

    # The same state again, with a fresh and valid code from GitHub and the login cookie.
    auth.cookies = dict(nonce_cookie)
    replay = auth.get(auth.authorize(login.headers["Location"]))

    assert replay.status_code == 400
    assert "already used" in replay.text
    assert exchanges(auth) == 1
    assert COOKIE_NAME not in set_cookies(replay)


def test_callback_with_a_state_signed_by_another_key_is_refused(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    state, started = StateSigner(b"k" * 32).issue("http://system.localhost:8000/dashboard/")
    app = auth.oauth_app
    assert app is not None
    code_url = auth.authorize(
        f"{auth.github.url}/login/oauth/authorize?client_id={app.client_id}"
        f"&redirect_uri={CALLBACK}&state={state}"
    )

    answer = auth.get(code_url, headers={"Cookie": f"ofc_auth_login={started.nonce}"})

    assert answer.status_code == 400
    assert "not one this service issued" in answer.text
    assert exchanges(auth) == 0


def test_callback_with_an_expired_state_is_refused(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    # Signed with edge-auth's own key, but eleven minutes ago.
    signer = StateSigner(derive_state_key(auth.private_key), clock=lambda: time.time() - 660)
    state, started = signer.issue("http://system.localhost:8000/dashboard/")
    app = auth.oauth_app
    assert app is not None
    code_url = auth.authorize(
        f"{auth.github.url}/login/oauth/authorize?client_id={app.client_id}"
        f"&redirect_uri={CALLBACK}&state={state}"
    )

    answer = auth.get(code_url, headers={"Cookie": f"ofc_auth_login={started.nonce}"})

    assert answer.status_code == 400
    assert "longer than 10 minutes" in answer.text
    assert exchanges(auth) == 0


def test_callback_in_a_browser_that_did_not_start_the_sign_in_is_refused(
    start_edge_auth: StartEdgeAuth,
) -> None:
    # Login CSRF: someone starts a sign-in as themselves and has a victim's browser finish it.
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    login = auth.start_login()
    callback = auth.authorize(login.headers["Location"])
    starter = dict(auth.cookies)

    auth.cookies.clear()
    victim = auth.get(callback)

    assert victim.status_code == 400
    assert "not started in this browser" in victim.text
    assert exchanges(auth) == 0
    auth.cookies = starter  # the browser that started it can still finish it
    assert auth.get(callback).status_code == 302


def test_callback_without_a_state_is_refused(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()

    answer = auth.get("/callback?code=abc")

    assert answer.status_code == 400
    assert "no sign-in state" in answer.text
    assert exchanges(auth) == 0


def test_sign_in_declined_on_github_answers_403(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice", approve=False)

    answer = auth.sign_in()

    assert answer.status_code == 403
    assert "declined" in answer.text
    assert exchanges(auth) == 0


def test_github_failing_on_the_code_exchange_gives_a_readable_502(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    auth.github.fail_next(status=500, path_contains="/login/oauth/access_token")

    answer = auth.sign_in()

    assert answer.status_code == 502
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "GitHub" in answer.text and "HTTP 500" in answer.text
    assert "Sign in again" in answer.text
    assert COOKIE_NAME not in set_cookies(answer)


def test_github_failing_on_the_user_api_gives_a_502(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    auth.github.fail_next(status=503, path_contains="/user/orgs")

    answer = auth.sign_in()

    assert answer.status_code == 502
    assert "/user/orgs" in answer.text
    assert COOKIE_NAME not in set_cookies(answer)


def test_github_refusing_the_client_secret_gives_a_502_naming_the_setting(
    start_edge_auth: StartEdgeAuth,
) -> None:
    auth = start_edge_auth(client_secret="not-the-apps-secret")
    auth.github.sign_in("alice")

    answer = auth.sign_in()

    assert answer.status_code == 502
    assert "oauth-client-secret" in answer.text
    assert "not-the-apps-secret" not in answer.text


def test_logout_clears_the_cookie_and_returns_to_r(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice")
    auth.sign_in()
    assert COOKIE_NAME in auth.cookies

    answer = auth.get("/logout", params={"r": "http://system.localhost:8000/dashboard/"})

    assert answer.status_code == 302
    assert answer.headers["Location"] == "http://system.localhost:8000/dashboard/"
    cleared = set_cookies(answer)[COOKIE_NAME]
    assert cleared.value == ""
    assert cleared["max-age"] == "0"
    assert (cleared["domain"], cleared["path"]) == ("system.localhost", "/")
    assert COOKIE_NAME not in auth.cookies


def test_logout_without_r_shows_a_signed_out_page(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()

    answer = auth.get("/logout")

    assert answer.status_code == 200
    assert "signed out" in answer.text
    assert set_cookies(answer)[COOKIE_NAME]["max-age"] == "0"


def test_logout_to_another_site_is_refused(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()

    answer = auth.get("/logout", params={"r": "https://evil.example/"})

    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_no_token_code_or_secret_reaches_the_log(start_edge_auth: StartEdgeAuth) -> None:
    auth = start_edge_auth()
    auth.github.sign_in("alice", orgs=["acme-org"])
    session = auth.sign_in()
    auth.get("/q/", params={"r": "/dashboard/"})
    auth.github.sign_in("mallory")
    auth.sign_in()
    auth.github.fail_next(status=500, path_contains="/user")
    auth.github.sign_in("alice")
    auth.sign_in()
    auth.get("/q/", headers={"Cookie": f"{COOKIE_NAME}=forged.{session.headers['Location']}"})

    log = auth.log()
    assert "signed in alice" in log and "refused mallory" in log  # the log is not empty
    secrets = [
        *auth.github.oauth_tokens,
        auth.oauth_app.client_secret,  # type: ignore[union-attr]
        set_cookies(session)[COOKIE_NAME].value,
        *[c.query["state"] for c in auth.github.calls("GET", "/login/oauth/authorize")],
        *[c.json["code"] for c in auth.github.calls("POST", "/login/oauth/access_token")],
        "PRIVATE KEY",
    ]
    assert len(auth.github.oauth_tokens) == 3
    for secret in filter(None, secrets):
        assert secret not in log
