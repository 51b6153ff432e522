"""Where a browser may be sent back to after signing in or out: the platform, nowhere else.

``r`` is accepted as a path (``/dashboard/``, resolved against ``system.<domain>``, the
platform's own host) or as an absolute ``http(s)`` URL whose host is the platform's domain
or a name under it, on any port. Anything a browser could read as another host is refused:
``//evil.com``, ``/\\evil.com``, ``https://localhost@evil.com``, ``https:evil.com``,
``javascript:...``, control characters (browsers drop tabs and newlines, which turns
``/\\t/evil.com`` into ``//evil.com``) and anything that is not printable ASCII.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["BadReturnUrl", "MAX_LENGTH", "safe_return_url"]

MAX_LENGTH = 2048
_PRINTABLE_ASCII = re.compile(r"^[\x21-\x7e]*$")
_ABSOLUTE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
_HOST = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)*$")


class BadReturnUrl(ValueError):
    """``r`` would send the browser off the platform; the message says what is accepted."""


def safe_return_url(r: str, *, domain: str, base: str) -> str:
    """The absolute URL to send the browser to for ``r``; :class:`BadReturnUrl` if refused.

    ``domain`` is the platform's (lower case); ``base`` is the origin a path is resolved
    against (``http://system.localhost:8000``)::

        safe_return_url("/dashboard/", domain="localhost", base="http://system.localhost:8000")
        -> "http://system.localhost:8000/dashboard/"
    """
    if len(r) > MAX_LENGTH:
        raise BadReturnUrl(f"the return URL is longer than {MAX_LENGTH} characters")
    if not _PRINTABLE_ASCII.match(r) or "\\" in r:
        raise BadReturnUrl(
            "the return URL must be printable ASCII without spaces or backslashes "
            "(percent-encode other characters)"
        )
    if r.startswith("/"):
        if r.startswith("//"):
            raise BadReturnUrl(
                "the return URL must be a path (/...) or an http(s) URL of the platform, not //host"
            )
        return base + r
    match = _ABSOLUTE.match(r)
    if match is None or match["scheme"].lower() not in ("http", "https"):
        raise BadReturnUrl("the return URL must be a path (/...) or an http(s) URL of the platform")
    parts = urlsplit(r)
    netloc = parts.netloc
    if not netloc or "@" in netloc:
        raise BadReturnUrl("the return URL must name a host, without a user name or password")
    host, _, port = netloc.rpartition(":") if ":" in netloc else (netloc, "", "")
    host = host.lower()
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise BadReturnUrl("the return URL has an invalid port")
    if not _HOST.match(host) or not (host == domain or host.endswith("." + domain)):
        raise BadReturnUrl(f"the return URL must be on {domain} or a subdomain of it")
    return r
