"""``python -m auth``: run edge-auth until SIGTERM or SIGINT.

Configuration comes from the environment (see :meth:`auth.config.AuthConfig.from_env`).
A bad setting or a missing signing key exits 2 with the message; a taken port exits 2.
Prints ``edge-auth listening on http://HOST:PORT`` once it accepts requests.
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from waitress import create_server

from auth.app import create_app
from auth.config import AuthConfig
from sdk.config import ConfigError

log = logging.getLogger("auth")


def main() -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        cfg = AuthConfig.from_env()
        app = create_app(cfg)
    except ConfigError as exc:
        print(f"ofc edge-auth: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        # Sign-in is not a hot path; a few threads cover the calls to GitHub.
        server = create_server(app, host=cfg.host, port=cfg.port, threads=8, ident="edge-auth")
    except OSError as exc:
        print(
            f"ofc edge-auth: cannot listen: {exc.strerror or exc} (set OFC_AUTH_HOST, OFC_AUTH_PORT)",
            file=sys.stderr,
        )
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = server.effective_port  # type: ignore[union-attr]
    print(f"edge-auth listening on http://{cfg.host}:{port}", flush=True)
    try:
        server.run()  # waitress turns the handler's SystemExit into an orderly return
    except SystemExit:
        pass
    finally:
        server.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
