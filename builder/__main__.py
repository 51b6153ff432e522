"""``python -m builder``: run the function builder until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`builder.config.BuilderConfig`).
Prints ``builder listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from builder.app import Builder
from builder.config import BuilderConfig, ConfigError


async def _main(builder: Builder) -> None:
    port = await builder.start()
    print(f"builder listening on http://{builder.cfg.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("builder").info("stopping")
    await builder.stop()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        builder = Builder(BuilderConfig.from_env())
    except (ConfigError, OSError) as exc:
        print(f"ofc builder: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        asyncio.run(_main(builder))
    else:
        uvloop.run(_main(builder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
