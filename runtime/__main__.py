"""``python -m runtime``: run the embedded gateway until SIGTERM or SIGINT.

Configuration comes from the environment (see :class:`runtime.config.RuntimeConfig`).
Prints ``gateway listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from runtime.config import ConfigError, RuntimeConfig
from runtime.gateway.app import Gateway


async def _main(cfg: RuntimeConfig) -> None:
    gateway = Gateway(cfg)
    port = await gateway.start()
    print(f"gateway listening on http://{cfg.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("runtime").info("stopping")
    await gateway.stop()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = RuntimeConfig.from_env()
    except ConfigError as exc:
        print(f"ofc runtime: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        asyncio.run(_main(cfg))
    else:
        uvloop.run(_main(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
