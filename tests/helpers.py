"""Small helpers shared by the tests: polling, and reading processes from /proc."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float, message: Callable[[], str] | str) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = message() if callable(message) else message
            raise AssertionError(f"after {timeout:g} s: {detail}")
        time.sleep(0.02)


def read_proc(path: str) -> bytes:
    """A /proc file's bytes, or ``b""`` when the process is gone."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


def child_pids(pid: int) -> set[int]:
    """Direct children of ``pid``, from every thread's children list."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children.update(int(p) for p in read_proc(f"{task}/children").split())
    return children


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = read_proc(f"/proc/{pid}/stat")
    return bool(stat) and stat.rsplit(b")", 1)[1].split()[0] != b"Z"
