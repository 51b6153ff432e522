"""The ``ofc`` CLI as a user runs it: bin/ofc in a subprocess against a real runtime."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, free_port
from tests.helpers import Cli, alive

OFC = str(REPO / "bin" / "ofc")


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, venv_dir: Path) -> Iterator[Cli]:
    """A runtime started with ``ofc up --detach`` (root stack deployed), stopped with ``ofc down``."""
    c = Cli(tmp_path_factory.mktemp("cli-state"), free_port(), venv_dir)
    c.ok("up", "--detach", "--timeout", "120")
    yield c
    c.run("down")


def write_project(root: Path, stack: str, functions: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stack.yml").write_text(textwrap.dedent(stack))
    for folder, handler in (functions or {}).items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "handler.py").write_text(textwrap.dedent(handler))
        (root / folder / "requirements.txt").write_text("")
    return root / "stack.yml"


def test_up_deploys_the_platform_stack_and_echo_answers(cli: Cli) -> None:
    response = requests.post(f"{cli.url}/function/echo", data=b"ping", timeout=10)
    assert response.status_code == 200
    assert response.text == "ping"


def test_deploy_example_prints_its_url_and_the_function_answers(cli: Cli) -> None:
    proc = cli.ok("deploy", "-f", "stack.yml", cwd=REPO / "examples")
    assert f"hello: {cli.url}/function/hello" in proc.stdout
    assert "ready: version" in proc.stderr  # progress was shown
    answer = requests.get(f"{cli.url}/function/hello", params={"name": "Ann"}, timeout=10)
    assert answer.json() == {"message": "Hello, Ann!"}


def test_invoke_sends_stdin_as_the_body_and_prints_the_answer(cli: Cli) -> None:
    cli.ok("deploy", "-f", "stack.yml", cwd=REPO / "examples")
    proc = cli.ok("invoke", "hello", stdin=b"Bob")
    assert proc.stdout == '{"message": "Hello, Bob!"}\n'


def test_invoke_of_an_unknown_function_exits_1_and_says_so(cli: Cli) -> None:
    proc = cli.run("invoke", "no-such-fn")
    assert proc.returncode == 1
    assert "no-such-fn" in proc.stdout + proc.stderr
    assert "404" in proc.stderr


def test_invoke_async_prints_a_call_id_and_the_call_completes(cli: Cli) -> None:
    cli.ok("deploy", "-f", "stack.yml", cwd=REPO / "examples")
    call_id = cli.ok("invoke", "hello", "--async", stdin=b"later").stdout.strip()
    assert len(call_id) >= 16
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = cli.ok("queue").stdout
        if f"{call_id}  hello  done" in queue:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"async call {call_id} not done:\n{queue}")


def test_list_shows_deployed_functions_with_replicas(cli: Cli) -> None:
    cli.ok("deploy", "-f", "stack.yml", cwd=REPO / "examples")
    lines = cli.ok("list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "IMAGE", "REPLICAS", "AVAILABLE", "INVOCATIONS"]
    hello = next(line.split() for line in lines if line.startswith("hello "))
    assert hello[1] == "local/hello:latest"
    assert hello[2:4] == ["1", "1"]


def test_logs_show_the_function_start(cli: Cli) -> None:
    cli.ok("deploy", "-f", "stack.yml", cwd=REPO / "examples")
    out = cli.ok("logs", "hello", "--tail", "20").stdout
    assert "listening on 127.0.0.1:" in out


def test_secret_created_from_a_file_reaches_the_function_and_is_never_printed(
    cli: Cli, tmp_path: Path
) -> None:
    value = "s3cr3t-value-for-cli-test"
    (tmp_path / "token.txt").write_text(value)
    cli.ok("secret", "create", "cli-token", "--from-file", str(tmp_path / "token.txt"))
    # Beside the platform's own (payload-secret, which the builder generates).
    assert "cli-token" in cli.ok("secret", "list").stdout.split()
    stack = write_project(
        tmp_path / "proj",
        """
        provider:
          name: openfaas
        functions:
          reads-secret:
            lang: python3-http
            handler: ./fn
            image: reads-secret:latest
            secrets:
              - cli-token
        """,
        {
            "fn": """
            import os
            def handle(event, context):
                path = os.path.join(os.environ["secret_mount_path"], "cli-token")
                return "length=%d" % len(open(path).read())
            """
        },
    )
    proc = cli.ok("deploy", "-f", str(stack))
    assert value not in proc.stdout + proc.stderr
    answer = requests.get(f"{cli.url}/function/reads-secret", timeout=10)
    assert answer.text == f"length={len(value)}"
    assert value not in cli.ok("logs", "reads-secret").stdout


def test_deploy_filter_deploys_only_the_named_function(cli: Cli, tmp_path: Path) -> None:
    handler = "def handle(event, context):\n    return 'hi'\n"
    stack = write_project(
        tmp_path,
        """
        provider:
          name: openfaas
        functions:
          only-me:
            lang: python3-http
            handler: ./a
            image: only-me:latest
          not-me:
            lang: python3-http
            handler: ./b
            image: not-me:latest
        """,
        {"a": handler, "b": handler},
    )
    cli.ok("deploy", "-f", str(stack), "--filter", "only-me")
    names = cli.ok("list").stdout
    assert "only-me" in names
    assert "not-me" not in names


def test_remove_deletes_the_function(cli: Cli, tmp_path: Path) -> None:
    stack = write_project(
        tmp_path,
        """
        provider:
          name: openfaas
        functions:
          short-lived:
            lang: python3-http
            handler: ./a
            image: short-lived:latest
        """,
        {"a": "def handle(event, context):\n    return 'x'\n"},
    )
    cli.ok("deploy", "-f", str(stack))
    cli.ok("remove", "short-lived")
    assert requests.get(f"{cli.url}/function/short-lived", timeout=10).status_code == 404


@pytest.mark.parametrize(
    ("stack", "expected"),
    [
        pytest.param(
            "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: python3-http\n    handler: ./a\n    image: a:latest\n    timeout: 5\n",
            ["stack.yml:8", "functions.a.timeout", "unknown field 'timeout'"],
            id="unknown-field",
        ),
        pytest.param(
            "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: python3-http\n    handler: ./a\n    image: a:latest\n    image: b:latest\n",
            ["stack.yml:8", "duplicate key 'image'"],
            id="duplicate-key",
        ),
        pytest.param(
            "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: python3-http\n    handler:\t./a\n",
            ["stack.yml:6", "TAB"],
            id="tab",
        ),
        pytest.param(
            "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: cobol-http\n    handler: ./a\n    image: a:latest\n",
            ["functions.a.lang", "unknown language 'cobol-http'", "python3-http"],
            id="unknown-lang",
        ),
        pytest.param(
            "provider:\n  name: openfaas\nfunctions:\n  a:\n    lang: python3-http\n    handler: ./missing\n    image: a:latest\n",
            ["a", "missing"],
            id="missing-handler-folder",
        ),
        pytest.param(
            "provider:\n  name: openfaas\nfunctions:\n  Bad_Name:\n    lang: python3-http\n    handler: ./a\n    image: a:latest\n",
            ["Bad_Name", "lower-case"],
            id="invalid-function-name",
        ),
        pytest.param(
            "provider:\n  name: swarm\nfunctions:\n  a:\n    lang: python3-http\n    handler: ./a\n    image: a:latest\n",
            ["provider.name", "swarm"],
            id="unknown-provider",
        ),
    ],
)
def test_deploy_of_a_broken_stack_file_exits_1_naming_file_line_and_field(
    cli: Cli, tmp_path: Path, stack: str, expected: list[str]
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "handler.py").write_text("def handle(event, context):\n    return 'x'\n")
    (tmp_path / "stack.yml").write_text(stack)
    proc = cli.run("deploy", "-f", str(tmp_path / "stack.yml"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr
    assert message.startswith("ofc: "), message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message


def test_up_while_running_refuses_with_the_pid(cli: Cli) -> None:
    proc = cli.run("up", "--detach")
    assert proc.returncode == 1
    assert "already running (pid" in proc.stderr


def test_commands_without_a_runtime_say_the_gateway_is_unreachable(
    tmp_path: Path, venv_dir: Path
) -> None:
    other = Cli(tmp_path / "state", free_port(), venv_dir)
    gateway_secrets = other.state_dir / "secrets" / "gateway"
    gateway_secrets.mkdir(parents=True)
    (gateway_secrets / "basic-auth-user").write_text("admin\n")
    (gateway_secrets / "basic-auth-password").write_text("pw\n")
    proc = other.run("list")
    assert proc.returncode == 1
    assert "cannot reach the gateway" in proc.stderr


def test_down_stops_the_runtime_and_its_functions(tmp_path: Path, venv_dir: Path) -> None:
    c = Cli(tmp_path / "state", free_port(), venv_dir)
    c.ok("up", "--detach", "--timeout", "120")
    pid = int((c.state_dir / "gateway.pid").read_text())
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "the platform's echo function should be running"
    c.ok("down")
    for p in [pid, *map(int, children)]:
        assert (
            not Path(f"/proc/{p}").exists()
            or "Z" in Path(f"/proc/{p}/stat").read_text().split(")")[-1][:3]
        )
    assert not (c.state_dir / "gateway.pid").exists()


def test_up_starts_the_builder_and_down_stops_it(tmp_path: Path, venv_dir: Path) -> None:
    c = Cli(tmp_path / "state", free_port(), venv_dir)
    healthz = f"http://127.0.0.1:{c.builder_port}/healthz"
    try:
        c.ok("up", "--detach", "--no-deploy")
        pid = int((c.state_dir / "builder.pid").read_text())
        assert requests.get(healthz, timeout=5).status_code == 200
        assert (c.state_dir / "builder.log").is_file()
    finally:
        c.run("down")
    assert not alive(pid)
    assert not (c.state_dir / "builder.pid").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(healthz, timeout=5)
