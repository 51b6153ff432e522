"""``python -m gitserver``: run the git remote until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`gitserver.config.GitServerConfig`).
Prints ``git remote listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from gitserver.app import GitServer
from gitserver.config import ConfigError, GitServerConfig


async def _main(server: GitServer) -> int:
    try:
        port = await server.start()
    except OSError as exc:  # most often: the port is taken (OFC_GIT_PORT)
        print(f"ofc git server: cannot listen on {server.cfg.host}:{server.cfg.port}: "
              f"{exc.strerror or exc} (OFC_GIT_HOST, OFC_GIT_PORT)", file=sys.stderr)  # fmt: skip
        return 2
    print(f"git remote listening on http://{server.cfg.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("gitserver").info("stopping")
    await server.stop()
    return 0


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        server = GitServer(GitServerConfig.from_env())
    except (ConfigError, OSError) as exc:
        print(f"ofc git server: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.run(_main(server))
    return uvloop.run(_main(server))


if __name__ == "__main__":
    sys.exit(main())
