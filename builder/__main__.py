"""``python -m builder``: run the function builder until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`builder.config.BuilderConfig`).
Prints ``builder listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import sys

from builder.app import Builder
from builder.config import BuilderConfig
from runtime.service import run_service


def main() -> int:
    return run_service(
        "builder",
        lambda: Builder(BuilderConfig.from_env()),
        lambda builder, port: f"http://{builder.cfg.host}:{port}",
        settings="OFC_BUILDER_HOST, OFC_BUILDER_PORT",
    )


if __name__ == "__main__":
    sys.exit(main())
