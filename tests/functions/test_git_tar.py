"""git-tar: image names, allowed git hosts, credential scrubbing, builder tars, stack checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdk.events import PushEvent
from tests.functions.conftest import REPO, load_handler

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def gt():  # type: ignore[no-untyped-def]
    return load_handler("git-tar")


def push(**overrides: object) -> PushEvent:
    fields: dict[str, object] = dict(
        delivery_id="d", owner="Alice", owner_id=1, repo="My-Fns", full_name="Alice/My-Fns",
        clone_url="https://github.com/Alice/My-Fns.git", html_url="https://github.com/Alice/My-Fns",
        private=False, ref="refs/heads/feature/x", sha=SHA, default_branch="main",
    )
    fields.update(overrides)
    return PushEvent(**fields)  # type: ignore[arg-type]


def test_image_is_registry_owner_repo_function_branch_and_sha(gt) -> None:  # type: ignore[no-untyped-def]
    assert gt.image_for(push(), "Hello", "127.0.0.1:5000") == "127.0.0.1:5000/alice/my-fns-hello:feature-x-0123456789ab"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://github.com/a/b.git", True),
        ("https://evil.example/a/b.git", False),
        ("file:///etc/passwd", False),
        ("ssh://github.com/a/b.git", False),
        ("http://127.0.0.1:9000/a/b.git", False),
    ],
    ids=["github", "other-host", "file-url", "ssh", "unlisted-loopback"],
)
def test_clone_is_allowed_only_from_configured_git_hosts(gt, url: str, allowed: bool) -> None:  # type: ignore[no-untyped-def]
    if allowed:
        gt.check_git_host(url, ("github.com",))
    else:
        with pytest.raises(gt.Failed, match="not allowed"):
            gt.check_git_host(url, ("github.com",))


def test_git_errors_never_show_the_installation_token(gt) -> None:  # type: ignore[no-untyped-def]
    url = gt.clone_url_with_token("https://github.com/a/b.git", "ghs_secret123")
    assert url == "https://x-access-token:ghs_secret123@github.com/a/b.git"
    message = f"fatal: unable to access '{url}': 403"
    scrubbed = gt._scrub(message, "ghs_secret123")
    assert "ghs_secret123" not in scrubbed
    assert "x-access-token" not in scrubbed




@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "no stack.yml"),
        ({"stack.yml": "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: cobol\n    handler: ./a\n    image: a\n"}, "unknown language 'cobol'"),
        ({"stack.yml": "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: python3-http\n    handler: ./a\n    image: a\n    timeout: 1\n"}, "stack.yml:8: functions.a.timeout"),
        ({"stack.yml": "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: dockerfile\n    handler: ./a\n    image: a\n"}, "dockerfile functions are not enabled"),
        ({"stack.yml": "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: python3-http\n    handler: ./a\n    image: a\n", "template/x/template.yml": "language: x\n"}, "template/ folder"),
    ],
    ids=["missing", "unknown-lang", "unknown-field", "dockerfile", "own-templates"],
)
def test_a_stack_that_cannot_be_built_fails_with_a_reason_naming_file_and_field(  # type: ignore[no-untyped-def]
    gt, tmp_path: Path, files: dict[str, str], reason: str
) -> None:
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    cfg = gt.Config.from_env({"templates_dir": str(REPO / "template")})
    with pytest.raises(gt.Failed) as err:
        gt.read_stack(tmp_path, cfg)
    assert reason in str(err.value)
    assert str(tmp_path) not in str(err.value)  # no server paths in a user-facing status
