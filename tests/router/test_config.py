"""The router's configuration: defaults that work on one machine, and bad values refused
at start with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router.config import ConfigError, RouterConfig, Upstream
from tests.helpers import REPO


def test_router_config_defaults_work_on_one_machine(tmp_path: Path) -> None:
    cfg = RouterConfig.from_env({"OFC_STATE_DIR": str(tmp_path)})

    assert (cfg.host, cfg.port, cfg.domain, cfg.public_scheme) == (
        "127.0.0.1", 8000, "localhost", "http",
    )  # fmt: skip
    assert cfg.gateway == Upstream("127.0.0.1", 8080, b"")
    assert cfg.git == Upstream("127.0.0.1", 8082, b"")
    assert cfg.auth == Upstream("127.0.0.1", 8083, b"")
    assert cfg.gateway_secrets_dir == tmp_path / "secrets" / "gateway"
    assert (cfg.refresh_interval, cfg.session_ttl) == (2.0, 5.0)
    assert cfg.public_origin("auth.system") == "http://auth.system.localhost:8000"


def test_router_config_leaves_the_default_port_out_of_public_urls() -> None:
    cfg = RouterConfig.from_env(
        {"OFC_DOMAIN": "Example.com", "OFC_PUBLIC_SCHEME": "https", "OFC_PUBLIC_PORT": "443"}
    )

    assert cfg.public_origin("system") == "https://system.example.com"


def test_router_config_keeps_an_upstream_path_prefix() -> None:
    cfg = RouterConfig.from_env({"OFC_GATEWAY_URL": "http://gw.internal:31112/openfaas/"})

    assert cfg.gateway == Upstream("gw.internal", 31112, b"/openfaas")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OFC_PUBLIC_SCHEME", "ftp", "OFC_PUBLIC_SCHEME='ftp'"),
        ("OFC_DOMAIN", "bad_domain!", "OFC_DOMAIN='bad_domain!'"),
        ("OFC_ROUTER_PORT", "80x", "OFC_ROUTER_PORT='80x'"),
        ("OFC_GATEWAY_URL", "https://127.0.0.1:8080", "plain http URL"),
        ("OFC_AUTH_URL", "127.0.0.1:8083", "OFC_AUTH_URL"),
        ("OFC_GIT_URL", "http://127.0.0.1:99999", "port"),
        ("OFC_ROUTER_UPSTREAM_TIMEOUT", "0", "must be above 0"),
        ("OFC_ROUTER_REFRESH_INTERVAL", "soon", "OFC_ROUTER_REFRESH_INTERVAL='soon'"),
    ],
)
def test_router_config_refuses_a_bad_value_naming_the_variable(
    name: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        RouterConfig.from_env({name: value})

    assert says in str(refused.value)


def test_router_config_never_repeats_a_password_in_a_url() -> None:
    with pytest.raises(ConfigError) as refused:
        RouterConfig.from_env({"OFC_GATEWAY_URL": "http://admin:s3cret@127.0.0.1:8080"})

    assert "s3cret" not in str(refused.value)


def test_router_with_a_bad_setting_exits_2_naming_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "OFC_PUBLIC_SCHEME": "gopher", "OFC_ROUTER_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2
    assert "OFC_PUBLIC_SCHEME='gopher'" in done.stderr
