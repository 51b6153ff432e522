"""Public URLs of users' functions, from one template shared by the stages that print them.

The template (env ``function_url_template``) may use ``{name}`` (``alice-hello``),
``{owner}`` (``alice``, lower-case) and ``{short_name}`` (``hello``), e.g.
``https://{owner}.example.com/{short_name}``. Without one, the gateway's own
``<gateway_url>/function/{name}`` is used.
"""

from __future__ import annotations

from sdk.config import ConfigError

__all__ = ["function_url_template", "function_url"]


def function_url_template(template: str, gateway_url: str) -> str:
    """The template to use: ``template``, or the gateway's; :class:`ConfigError` when malformed."""
    template = template or gateway_url.rstrip("/") + "/function/{name}"
    try:
        function_url(template, name="fn", owner="owner", short_name="fn")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"function_url_template={template!r}: {type(exc).__name__} {exc}; "
            "use only the placeholders {name}, {short_name} and {owner}"
        ) from None
    return template


def function_url(template: str, *, name: str, owner: str, short_name: str) -> str:
    """Fill in ``template`` for one function."""
    return template.format(name=name, owner=owner.lower(), short_name=short_name)
