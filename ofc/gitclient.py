"""Running git against the built-in remote without putting a token on a command line.

The token reaches git only through ``GIT_ASKPASS`` and the environment, so it shows in
no process list, no URL git prints, and no log.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

__all__ = ["git_env", "git"]


def git_env(home: Path, user: str, token: str) -> dict[str, str]:
    """git with no system or user configuration, a fixed identity, and ``user``'s token."""
    askpass = home / "askpass.sh"
    askpass.write_text(
        '#!/bin/sh\ncase "$1" in Username*) echo "$OFC_GIT_USER";; *) echo "$OFC_GIT_TOKEN";; esac\n'
    )
    askpass.chmod(0o700)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": str(askpass),
        "OFC_GIT_USER": user,
        "OFC_GIT_TOKEN": token,
        "GIT_AUTHOR_NAME": user,
        "GIT_AUTHOR_EMAIL": f"{user}@example.com",
        "GIT_COMMITTER_NAME": user,
        "GIT_COMMITTER_EMAIL": f"{user}@example.com",
    }


def git(work: Path, env: dict[str, str], *args: str) -> str:
    """Run git in ``work``; its output, or CalledProcessError."""
    return subprocess.run(
        ["git", *args], cwd=work, env=env, check=True, capture_output=True, text=True
    ).stdout
