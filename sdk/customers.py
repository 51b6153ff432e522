"""The customers allow-list: which GitHub accounts may use the platform.

One login per line (``#`` comments and blank lines ignored), compared case-insensitively,
read from a file or a URL and cached for ``ttl`` seconds. A list that cannot be read
admits nobody (fail closed) and says so in the log; the original platform crashed on a
``nil`` map instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import requests

log = logging.getLogger(__name__)

__all__ = ["Customers", "parse_customers"]


def parse_customers(text: str) -> frozenset[str]:
    """Logins in ``text``, lower-cased."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(line.lower())
    return frozenset(names)


class Customers:
    """An allow-list from ``path`` or ``url`` (exactly one), re-read after ``ttl`` seconds."""

    def __init__(
        self,
        *,
        path: str | Path | None = None,
        url: str | None = None,
        ttl: float = 300.0,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (path is None) == (url is None):
            raise ValueError("give the customers list as exactly one of path or url")
        self._path = Path(path) if path is not None else None
        self._url = url
        self._ttl = ttl
        self._session = session or requests.Session()
        self._clock = clock
        self._names: frozenset[str] | None = None
        self._loaded_at = float("-inf")

    def _load(self) -> frozenset[str]:
        if self._path is not None:
            return parse_customers(self._path.read_text())
        assert self._url is not None
        response = self._session.get(self._url, timeout=5)
        response.raise_for_status()
        return parse_customers(response.text)

    def allows(self, login: str) -> bool:
        """True when ``login`` (any case) is on the list."""
        now = self._clock()
        if self._names is None or now - self._loaded_at >= self._ttl:
            try:
                self._names = self._load()
                self._loaded_at = now
            except (OSError, requests.RequestException) as exc:
                source = self._path or self._url
                log.error("cannot read the customers list from %s: %s", source, type(exc).__name__)
                if self._names is None:
                    return False  # never read: admit nobody
                # Keep the last good list rather than locking everyone out on a blip.
        return login.lower() in self._names
