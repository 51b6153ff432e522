"""Fixtures: running python3-http functions, each a real index.py subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from template_harness import FUNCTIONS, RunningFunction, make_build_folder, start_function


@pytest.fixture(scope="session")
def echo_function(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFunction]:
    """The echo test function (with a copied sdk/), no ``function/__init__.py``,
    HOSTNAME=replica-1."""
    build = make_build_folder(tmp_path_factory.mktemp("echo") / "build", FUNCTIONS / "echo")
    running = start_function(build, {"HOSTNAME": "replica-1"})
    yield running
    running.stop()


@pytest.fixture(scope="session")
def packaged_echo_function(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFunction]:
    """The echo test function laid out as in the image (``function/__init__.py``),
    HOSTNAME unset."""
    build = make_build_folder(
        tmp_path_factory.mktemp("packaged") / "build", FUNCTIONS / "echo", package=True
    )
    running = start_function(build)
    yield running
    running.stop()


@pytest.fixture
def default_function(tmp_path: Path) -> Iterator[RunningFunction]:
    """The template as shipped, its own default handler, one per test."""
    running = start_function(make_build_folder(tmp_path / "build"))
    yield running
    running.stop()
