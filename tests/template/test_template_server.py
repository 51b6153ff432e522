"""index.py as a server: probes, errors, logs, imports, configuration and shutdown."""

import re
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from template_harness import FUNCTIONS, PYTHON, clean_env, make_build_folder, start_function


@pytest.mark.parametrize("path", ["/_/health", "/_/ready"], ids=["health", "ready"])
def test_probe_answers_ok_although_handler_answers_every_path(echo_function, path):
    response = requests.get(echo_function.url + path, timeout=5)

    assert (response.status_code, response.text) == (200, "OK")


def test_probe_answers_head_without_body(echo_function):
    response = requests.head(echo_function.url + "/_/health", timeout=5)

    assert (response.status_code, response.content) == (200, b"")


def test_probe_rejects_post_with_405(echo_function):
    response = requests.post(echo_function.url + "/_/health", timeout=5)

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_handler_exception_gives_500_without_traceback(echo_function):
    response = requests.get(echo_function.url + "/raise", timeout=5)

    assert (response.status_code, response.text) == (500, "internal error")


def test_handler_exception_traceback_goes_to_stderr(echo_function):
    requests.get(echo_function.url + "/raise", timeout=5)

    stderr = echo_function.wait_for_output("stderr", "RuntimeError: secret detail")
    assert "Traceback (most recent call last)" in stderr
    assert "Exception on /raise [GET]" in stderr


def test_unsendable_return_value_gives_500(echo_function):
    response = requests.get(echo_function.url + "/unsendable", timeout=5)

    assert (response.status_code, response.text) == (500, "internal error")


def test_handler_print_reaches_stdout_while_running(echo_function):
    requests.get(echo_function.url + "/print", timeout=5)

    echo_function.wait_for_output("stdout", "printed by the handler")


def test_start_logs_listening_address(echo_function):
    stderr = echo_function.stderr()

    assert f"listening on 127.0.0.1:{echo_function.port}" in stderr


def test_port_0_listens_on_a_free_port_named_in_start_line(tmp_path):
    build = make_build_folder(tmp_path / "build")
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [PYTHON, str(build / "index.py")],
            env=clean_env({"port": "0", "bind_address": "127.0.0.1"}),
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 15
        while not (match := re.search(r"listening on 127\.0\.0\.1:(\d+)", stderr_path.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, stderr_path.read_text()
            time.sleep(0.05)

        response = requests.get(f"http://127.0.0.1:{match[1]}/_/health", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert int(match[1]) > 0
    assert response.text == "OK"


def test_import_sdk_finds_sdk_copied_into_function_folder(echo_function):
    result = requests.get(echo_function.url + "/sdk", timeout=5).json()

    assert result["marker"] == "copied-into-function-folder"
    assert Path(result["file"]) == echo_function.build / "function" / "sdk" / "__init__.py"


def test_build_folder_without_init_py_gets_nothing_written(echo_function):
    written = {
        path.relative_to(echo_function.build)
        for path in echo_function.build.rglob("*")
        if "__pycache__" in path.parts or path.name == "__init__.py"
    }

    assert written == {Path("function/sdk/__init__.py")}  # the one the fixture copied


def test_build_folder_gets_no_bytecode_with_pycache_prefix(tmp_path):
    build = make_build_folder(tmp_path / "build", FUNCTIONS / "echo")
    prefix = tmp_path / "pycache"

    running = start_function(build, {"PYTHONPYCACHEPREFIX": str(prefix)})
    running.stop()

    assert not list(build.rglob("__pycache__"))
    assert list(prefix.rglob("handler.*.pyc"))  # the runtime's shared cache is used


def test_function_folder_as_package_serves_handler(packaged_echo_function):
    response = requests.get(packaged_echo_function.url + "/str", timeout=5)

    assert (response.status_code, response.text) == (200, "plain string")


def test_default_handler_answers_greeting(default_function):
    response = requests.post(default_function.url + "/", data=b"x", timeout=5)

    assert (response.status_code, response.text) == (200, "Hello from OpenFaaS!")


def test_sigterm_stops_with_status_0(default_function):
    status = default_function.stop()

    assert status == 0, default_function.stderr()
    assert "stopping on SIGTERM" in default_function.stderr()


def test_more_idle_connections_than_waitress_default_still_served(echo_function):
    # waitress's own default connection_limit is 100 and idle keep-alive
    # connections count; index.py's default must leave room for a pooling gateway.
    with ExitStack() as stack:
        for _ in range(150):
            stack.enter_context(socket.create_connection(("127.0.0.1", echo_function.port)))

        response = requests.get(echo_function.url + "/_/health", timeout=3)

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("port", "80a", "port='80a': expected a whole number"),
        ("port", "70000", "port=70000: must be at most 65535"),
        ("threads", "0", "threads=0: must be at least 1"),
        ("connection_limit", "many", "connection_limit='many': expected a whole number"),
        ("channel_timeout", "-1", "channel_timeout=-1: must be at least 1"),
    ],
    ids=["port-not-number", "port-too-big", "no-threads", "limit-not-number", "timeout-negative"],
)
def test_bad_setting_exits_2_naming_variable(tmp_path, name, value, message):
    build = make_build_folder(tmp_path / "build")

    result = subprocess.run(
        [PYTHON, str(build / "index.py")],
        env=clean_env({name: value}),
        capture_output=True,
        text=True,
        timeout=15,
    )

    assert result.returncode == 2
    assert message in result.stderr


def test_handler_import_error_stops_the_process(tmp_path):
    build = make_build_folder(tmp_path / "build", FUNCTIONS / "echo")
    (build / "function" / "handler.py").write_text("import no_such_module_anywhere\n")

    result = subprocess.run(
        [PYTHON, str(build / "index.py")],
        env=clean_env({"port": "0", "bind_address": "127.0.0.1"}),
        capture_output=True,
        text=True,
        timeout=15,
    )

    assert result.returncode != 0
    assert "No module named 'no_such_module_anywhere'" in result.stderr
    assert "listening on" not in result.stderr
