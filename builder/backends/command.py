"""Running one build command with its output streamed line by line, killed when cancelled.

Both backends run tools (pip and pytest for ``local``, the docker client or buildctl for
``buildkit``) whose every line belongs in the build log as it is printed, and whose
whole process group must go when the build's time limit cancels it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["run_streaming"]

_LINE_LIMIT = 1 << 20  # a longer line is still read, in pieces, not an error


async def run_streaming(
    argv: list[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> int:
    """Run ``argv`` with stdout and stderr merged, pass each line to ``on_line``; the exit status.

    The command leads its own process group, so cancelling (the build's time limit) kills
    it and every helper it started.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        limit=_LINE_LIMIT,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readuntil(b"\n")
            except asyncio.IncompleteReadError as end:  # the last line, without a newline
                raw = end.partial
            except asyncio.LimitOverrunError as long:  # a line over the limit: a piece of it
                raw = await proc.stdout.read(max(long.consumed, 1))
            if not raw:
                break
            on_line(raw.decode("utf-8", "replace").rstrip())
        return await proc.wait()
    finally:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already gone
            await proc.wait()
