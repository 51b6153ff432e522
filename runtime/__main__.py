"""``python -m runtime``: run the embedded gateway until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`runtime.config.RuntimeConfig`).
Prints ``gateway listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import sys

from runtime.config import RuntimeConfig
from runtime.gateway.app import Gateway
from runtime.service import run_service


def main() -> int:
    return run_service(
        "gateway",
        lambda: Gateway(RuntimeConfig.from_env()),
        lambda gateway, port: f"http://{gateway.cfg.host}:{port}",
        settings="OFC_GATEWAY_HOST, OFC_GATEWAY_PORT",
    )


if __name__ == "__main__":
    sys.exit(main())
