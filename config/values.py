"""The values of a configuration: its errors, durations, limits, secrets and file lines.

What every part of the configuration (the schema, its reading, its checks) needs:
``ConfigError`` and ``Problem`` (one key, where it came from, what is wrong),
durations such as ``"15s"``, ``api.key_limits`` specs, which keys are secret
and how they are masked, and the line of each key in the TOML file (tomllib
gives no positions).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong: the key, where its value came from, and what is wrong."""

    key: str
    source: str
    what: str

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.key}{where}: {self.what}" if self.key else f"{self.source}: {self.what}"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> timedelta:
    """``"90s"``, ``"36h"``, ``"7d"`` (a bare number is seconds)."""
    if isinstance(text, int | float):
        return timedelta(seconds=text)
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. '90s', '36h', '7d')")
    return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])


KEY_LIMIT_NAMES = ("open_requests_per_account", "mails_per_recipient")


def parse_key_limits(key: str, spec: str) -> dict[str, int]:
    """``"open_requests_per_account=50, mails_per_recipient=100"`` as a dict."""
    values: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, number = (part.strip() for part in item.partition("="))
        if name not in KEY_LIMIT_NAMES or not number.isdigit():
            raise ConfigError(
                f"api.key_limits.{key}: expected name=N with name one of "
                f"{', '.join(KEY_LIMIT_NAMES)}, got {item!r}"
            )
        values[name] = int(number)
    return values


# Keys whose values are never printed: in `config show`, in problems, in logs.
SECRET_KEYS = frozenset(
    {"inbound.imap_password", "outbound.smtp_password", "api.keys", "apply.secret"}
)
MASK = "********"
HOOK_EVENT_TYPES = ("request.created", "request.state_changed", "validator.decided")


def mask(key: str, value: Any) -> Any:
    """The value as it may be shown: secrets starred, a database URL without its password."""
    if key == "hooks.endpoints":  # tables, each with a secret of its own
        return [
            {"url": e.url, "secret": MASK if e.secret else "", "events": list(e.events)}
            for e in value
        ]
    if key in SECRET_KEYS:
        if isinstance(value, Mapping):
            return {name: MASK for name in value}
        return MASK if value else value
    if key == "database.url" and isinstance(value, str) and value:
        return url_without_password(value)
    return value


def url_without_password(url: str) -> str:
    # scheme://user:password@host/... -> scheme://user:***@host/...
    return re.sub(r"^([^:/]+://[^:/@]*):[^@]*@", rf"\1:{MASK}@", url)


# --- where each key sits in the file ----------------------------------------------------

_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def key_lines(text: str) -> dict[str, int]:
    """``{"section.key": line}`` for each key and table header of a TOML text.

    A scan of the lines, not a parser: enough for ``key = value`` under
    ``[section]`` headers and dotted keys, which is what a configuration holds.
    Lines inside a multi-line value may be misread as keys; those names are
    only looked up for keys the parser really found, so a stray entry is harmless.
    """
    found: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if header := _TABLE.match(line):
            table = _dotted(header[1])
            found.setdefault(table, number)
        elif key := _KEY.match(line):
            name = _dotted(key[1])
            found.setdefault(f"{table}.{name}" if table else name, number)
    return found


def _dotted(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))
