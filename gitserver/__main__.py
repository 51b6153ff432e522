"""``python -m gitserver``: run the git remote until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`gitserver.config.GitServerConfig`).
Prints ``git remote listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import sys

from gitserver.app import GitServer
from gitserver.config import GitServerConfig
from runtime.service import run_service


def main() -> int:
    return run_service(
        "git remote",
        lambda: GitServer(GitServerConfig.from_env()),
        lambda server, port: f"http://{server.cfg.host}:{port}",
        settings="OFC_GIT_HOST, OFC_GIT_PORT",
    )


if __name__ == "__main__":
    sys.exit(main())
