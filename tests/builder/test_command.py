"""builder/backends/command.py: every line of a build command reaches the log, however long."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from builder.backends import command


def run(code: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    status = asyncio.run(
        command.run_streaming([sys.executable, "-c", code], lines.append, env=os.environ)
    )
    return status, lines


def test_lines_and_the_exit_status_come_back() -> None:
    status, lines = run(
        "import sys; print('one'); print('two'); sys.stdout.write('last'); sys.exit(3)"
    )
    assert (status, lines) == (3, ["one", "two", "last"])


def test_a_line_longer_than_the_limit_is_passed_on_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(command, "_LINE_LIMIT", 1024)
    status, lines = run("print('x' * 5000); print('after')")
    assert status == 0
    assert "".join(lines).count("x") == 5000  # nothing of it lost
    assert lines[-1] == "after"
