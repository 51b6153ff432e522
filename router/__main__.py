"""``python -m router``: run the edge router until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`router.config.RouterConfig`).
Prints ``router listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import sys

from router.app import EdgeRouter
from router.config import RouterConfig
from runtime.service import run_service


def main() -> int:
    return run_service(
        "router",
        lambda: EdgeRouter(RouterConfig.from_env()),
        lambda router, port: f"http://{router.cfg.host}:{port}",
        settings="OFC_ROUTER_HOST, OFC_ROUTER_PORT",
    )


if __name__ == "__main__":
    sys.exit(main())
