"""Strict parsers for configuration values, one per value type.

Every component builds one frozen config object at start from an injected mapping
(normally ``os.environ``) with these helpers, so a typo such as ``validate_hmac=flase``
stops the component with a message naming the variable, instead of silently meaning
"off".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["ConfigError", "env_bool", "env_int", "env_duration", "env_str", "parse_duration"]


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    """Return ``env[name]`` stripped of surrounding whitespace, or ``default`` when unset or empty."""
    value = env.get(name, "").strip()
    return value or default


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Parse a boolean toggle: ``1/true/yes/on`` or ``0/false/no/off`` (any case).

    Unset or empty gives ``default``; anything else raises :class:`ConfigError`.
    """
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}={env[name]!r}: expected true/false, 1/0, yes/no or on/off")


def env_int(
    env: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Parse an integer, optionally bounded; unset or empty gives ``default``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value}: must be at most {maximum}")
    return value


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Parse seconds from ``"30"``, ``"1.5"``, or a Go-style duration ``"1h2m3s"``, ``"250ms"``.

    OpenFaaS components accept both forms for timeouts (a bare number means seconds).
    Raises ``ValueError`` on anything else.
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds < 0:
            raise ValueError(f"negative duration {text!r}")
        return seconds
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"{text!r} is not a duration")
    return total


def env_duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Parse a duration in seconds (see :func:`parse_duration`); unset or empty gives ``default``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r}: expected seconds or a duration such as 30s, 5m or 1h30m"
        ) from None
