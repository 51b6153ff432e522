"""Running one of the platform's asyncio services (gateway, builder, git remote) as a process.

Each ``python -m <service>`` does the same: log to stderr, build the service from its
configuration (a bad setting exits 2 with the message), listen (a taken port exits 2),
say where it listens, and stop in order on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

from sdk.config import ConfigError

__all__ = ["Service", "StartupError", "run_service"]


class StartupError(Exception):
    """Something the service needs at start is not there (an engine that does not answer).

    Raised by ``start()``; reported in one line with exit status 2, like a bad setting.
    """


class Service(Protocol):
    async def start(self) -> int:
        """Start serving; returns the bound port."""
        ...

    async def stop(self) -> None:
        """Finish what is in flight and release everything."""
        ...


S = TypeVar("S", bound=Service)


def run_service(
    name: str, make: Callable[[], S], url: Callable[[S, int], str], *, settings: str = ""
) -> int:
    """Run the service ``make`` builds until a signal; the process's exit status.

    ``settings`` names the variables that choose the address, for the message when
    the port is taken.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        service = make()
    except (ConfigError, OSError) as exc:
        print(f"ofc {name}: cannot start: {exc}", file=sys.stderr)
        return 2

    async def serve() -> int:
        try:
            port = await service.start()
        except StartupError as exc:
            print(f"ofc {name}: cannot start: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # most often the port is taken
            hint = f" (set {settings})" if settings else ""
            print(f"ofc {name}: cannot listen: {exc.strerror or exc}{hint}", file=sys.stderr)
            return 2
        print(f"{name} listening on {url(service, port)}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logging.getLogger(name).info("stopping")
        await service.stop()
        return 0

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a declared dependency
        return asyncio.run(serve())
    return uvloop.run(serve())
