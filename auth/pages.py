"""The few pages edge-auth shows a person: a title, a sentence, and maybe one link.

Every value is HTML-escaped; none of them ever holds a token, a code or a secret.
"""

from __future__ import annotations

from html import escape

from flask import Response

__all__ = ["page"]

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - OpenFaaS Cloud</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem; color: #222; }}
h1 {{ font-size: 1.4rem; }}
a {{ color: #0366d6; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{message}</p>
{link}
</body>
</html>
"""


def page(status: int, title: str, message: str, link: tuple[str, str] | None = None) -> Response:
    """An HTML page with ``status``; ``link`` is ``(text, href)``."""
    anchor = ""
    if link is not None:
        anchor = f'<p><a href="{escape(link[1])}">{escape(link[0])}</a></p>'
    body = _TEMPLATE.format(title=escape(title), message=escape(message), link=anchor)
    response = Response(body, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response
