"""Loading a pipeline function's handler.py and calling it as the python3-http template does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from werkzeug.datastructures import Headers, MultiDict

REPO = Path(__file__).resolve().parents[2]


class Event:
    """The template's event: body bytes, case-insensitive headers, method, query, path."""

    def __init__(
        self,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        method: str = "POST",
        query: dict[str, str] | None = None,
        path: str = "/",
    ) -> None:
        self.body = body
        self.headers = Headers(headers or {})
        self.method = method
        self.query = MultiDict(query or {})
        self.path = path


class Context:
    hostname = "localhost"


def load_handler(folder: str, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> ModuleType:
    """Import ``<folder>/handler.py`` fresh (the environment is read at import)."""
    if env is not None:
        assert monkeypatch is not None, "pass monkeypatch with env so the test owns its environment"
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    name = f"ofc_fn_{folder.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, REPO / folder / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def platform_secrets(folder: Path, credentials: tuple[str, str], payload_secret: str) -> Path:
    """A secret mount for a function that calls the gateway API: payload secret and basic auth."""
    folder.mkdir(parents=True, exist_ok=True)
    user, password = credentials
    (folder / "payload-secret").write_text(payload_secret)
    (folder / "basic-auth-user").write_text(user)
    (folder / "basic-auth-password").write_text(password)
    return folder


@pytest.fixture
def context() -> Context:
    return Context()
