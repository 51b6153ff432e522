"""The template's own files: its handler test, and settings that must agree."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from template_harness import PYTHON, REPO, TEMPLATE, clean_env, make_build_folder

PYTEST = Path(PYTHON).parent / "pytest"


def run_function_tests(build: Path) -> subprocess.CompletedProcess[str]:
    """The plain pytest script in a build's function/ folder, as tox runs it: unlike
    ``python -m pytest`` it does not put the working directory on sys.path."""
    return subprocess.run(
        [str(PYTEST), "-p", "no:cacheprovider"],
        cwd=build / "function",
        env=clean_env({"PYTHONDONTWRITEBYTECODE": "1"}),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("package", [False, True], ids=["build-folder", "image-layout"])
def test_template_handler_test_passes_with_pytest_in_function_folder(tmp_path, package):
    # The plain pytest script, as tox runs it: unlike `python -m pytest` it does not
    # put the working directory on sys.path, so tox.ini's pythonpath must.
    build = make_build_folder(tmp_path / "build", package=package)

    result = run_function_tests(build)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_template_handler_test_passes_for_any_users_handler(tmp_path):
    # It stays in every function without its own tests, so it must not assume the
    # template's greeting (a user's echo function failed its build on it).
    build = make_build_folder(tmp_path / "build")
    handler = build / "function" / "handler.py"
    handler.write_text("def handle(event, context):\n    return event.body\n")

    result = run_function_tests(build)

    assert result.returncode == 0, result.stdout + result.stderr


def test_template_handler_test_fails_when_handle_is_missing(tmp_path):
    build = make_build_folder(tmp_path / "build")
    handler = build / "function" / "handler.py"
    handler.write_text("def handler(event, context):\n    return 'typo'\n")

    result = run_function_tests(build)

    assert result.returncode == 1, result.stdout


def test_template_yml_names_language_and_fprocess():
    template = yaml.safe_load((TEMPLATE / "template.yml").read_text())

    assert template["language"] == "python3-http"
    assert template["fprocess"] == "python index.py"


def test_dockerfile_runs_fprocess_with_venv_python_first_on_path():
    dockerfile = (TEMPLATE / "Dockerfile").read_text()

    assert 'ENV PATH="/home/app/venv/bin:${PATH}"' in dockerfile
    assert 'CMD ["/home/app/venv/bin/python", "index.py"]' in dockerfile


def test_dockerfile_is_one_stage_so_tests_always_run():
    dockerfile = (TEMPLATE / "Dockerfile").read_text()

    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) == 1
    assert "ARG TEST_ENABLED=true" in dockerfile


def test_dockerfile_healthcheck_uses_health_probe():
    dockerfile = (TEMPLATE / "Dockerfile").read_text()

    assert re.search(r"^HEALTHCHECK .*\n.*/_/health", dockerfile, re.MULTILINE)


def pins(path):
    return dict(
        line.split("==", 1)
        for line in path.read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    )


@pytest.mark.parametrize("package", ["flask", "waitress"])
def test_wrapper_pins_match_the_dev_environment(package):
    # The dev venv runs these tests; the image must install what was tested.
    assert pins(TEMPLATE / "requirements.txt")[package] == pins(REPO / "requirements.txt")[package]
