"""The rules each configuration value must satisfy (ports, durations, URLs, the mail
domain, the database driver), so that ``config check`` and ``serve`` can say which
key is wrong and why, without echoing a password.  Values come as a flat
``{"section.key": value}`` mapping.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from countersign.config.values import (
    HOOK_EVENT_TYPES,
    ConfigError,
    parse_duration,
    parse_key_limits,
    url_without_password,
)

DURATION_KEYS = (
    "shutdown_grace",
    "requests.expire_after",
    "scheduler.sweep_every",
    "outbound.timeout",
    "outbound.first_retry",
    "outbound.give_up_after",
    "inbound.bad_code_window",
    "leases.owner_timeout",
    "web.sign_in_valid",
    "web.session_valid",
    "limits.sign_in_window",
    "limits.mail_window",
    "hooks.timeout",
    "hooks.first_retry",
    "hooks.give_up_after",
    "apply.timeout",
    "apply.first_retry",
    "apply.give_up_after",
)
OPTIONAL_DURATION_KEYS = ("retention",)  # empty: off
POSITIVE_KEYS = ("inbound.max_bytes", "inbound.bad_code_limit")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*/=?^_`{|}~.-]+$")


def check_values(values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(key, what is wrong)`` for each value that cannot be used as it stands."""
    for key, value in values.items():
        if key.endswith("_port") or key == "web.port":
            yield from _port(key, value)
    for key in DURATION_KEYS:
        yield from _positive_duration(key, values.get(key))
    for key in OPTIONAL_DURATION_KEYS:
        if values.get(key):
            yield from _positive_duration(key, values[key])
    for key in POSITIVE_KEYS:
        if isinstance(values.get(key), int) and values[key] <= 0:
            yield key, f"must be more than 0, got {values[key]}"
    yield from _reminders(values)
    yield from _port_clashes(values)
    if values.get("apply.url") and not values.get("apply.secret"):
        yield "apply.secret", "needed with apply.url: every POST to the applier is signed"
    for key, check in _SINGLE_CHECKS.items():
        if key in values and (what := check(values[key])):
            yield key, what


def _port(key: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, int) and not 1 <= value <= 65535:
        yield key, f"must be a port number from 1 to 65535, got {value}"


_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 (recognised, not bound)
_LISTENERS = (
    ("inbound.smtp_port", "inbound.smtp_host"),
    ("web.port", "web.host"),
    ("web.metrics_port", "web.metrics_host"),
)


def _port_clashes(values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Two of the daemon's own listeners on one port of one address cannot both start."""
    taken: dict[int, str] = {}
    for port_key, host_key in _LISTENERS:
        port = values.get(port_key)
        host = values.get(host_key) or values.get("web.host")
        if not isinstance(port, int):
            continue
        for other_port, other_key in taken.items():
            other_host = values.get(other_key.replace("port", "host")) or values.get("web.host")
            wildcard = bool(_ANY_ADDRESS & {host, other_host})
            if other_port == port and (host == other_host or wildcard):
                yield port_key, f"port {port} is also {other_key}'s: two listeners cannot share it"
        taken[port] = port_key


def _duration(value: Any) -> timedelta | None:
    try:
        return parse_duration(value)
    except ConfigError:
        return None


def _positive_duration(key: str, value: Any) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    length = _duration(value)
    if length is None:
        yield key, f"not a duration: {value!r} (use e.g. '90s', '36h', '7d')"
    elif length <= timedelta(0):
        yield key, f"must be longer than 0s, got {value!r}"


def _reminders(values: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    expire = _duration(values.get("requests.expire_after", ""))
    for text in values.get("requests.remind_after", ()):
        length = _duration(text)
        if length is None:
            yield "requests.remind_after", f"not a duration: {text!r} (use e.g. '2d')"
        elif length <= timedelta(0):
            yield "requests.remind_after", f"must be longer than 0s, got {text!r}"
        elif expire is not None and timedelta(0) < expire <= length:
            expiry = values.get("requests.expire_after")
            yield (
                "requests.remind_after",
                f"{text!r} is not before requests.expire_after ({expiry!r}): "
                "the request would expire before the reminder",
            )


def _public_url(value: Any) -> str | None:
    parts = urlsplit(str(value))
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return f"must be an http:// or https:// URL, got {value!r}"
    return None


def _domain(value: Any) -> str | None:
    text = str(value)
    labels = text.rstrip(".").split(".")
    if len(text) > 253 or not all(_LABEL.match(label) for label in labels):
        return f"must be a domain name such as example.com, got {value!r}"
    return None


def _reply_local(value: Any) -> str | None:
    if not _LOCAL_PART.match(str(value)) or "+" in str(value):
        return f"must be the local part of an address, without '+' or '@', got {value!r}"
    return None


def _owner_timeout(value: Any) -> str | None:
    length = _duration(value)
    # Heartbeats come every third of it: less would free live daemons' work.
    if length is not None and timedelta(0) < length < timedelta(seconds=3):
        return f"must be at least 3s, got {value!r}"
    return None


def _key_limits(value: Any) -> str | None:
    for key, spec in dict(value).items():
        try:
            parse_key_limits(key, spec)
        except ConfigError as error:
            return str(error)  # names the key: api.key_limits.NAME
    return None


def _trusted_proxies(value: Any) -> str | None:
    for proxy in value or ():
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            return f"not an address or network: {proxy!r}"
    return None


def _hook_endpoints(value: Any) -> str | None:
    for index, endpoint in enumerate(value):
        key = f"hooks.endpoints[{index}]"
        if _public_url(endpoint.url):
            return f"{key}.url: must be an http:// or https:// URL, got {endpoint.url!r}"
        if not endpoint.secret:
            return f"{key}.secret: every endpoint needs a secret to sign with"
        unknown = sorted(set(endpoint.events) - set(HOOK_EVENT_TYPES))
        if unknown:
            return f"{key}.events: unknown event type {unknown[0]!r}"
    return None


def _apply_url(value: Any) -> str | None:
    return _public_url(value) if value else None  # empty: applied to the own store


def _api_keys(value: Any) -> str | None:
    if any(not name or not key for name, key in dict(value).items()):
        return "every API key needs a name and a non-empty key"
    return None


def database_problem(url: str) -> str | None:
    """Why this SQLAlchemy URL cannot be used, or None: SQLite or PostgreSQL, driver installed."""
    if not url:
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = url_without_password(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"not a database URL: {shown!r} (use sqlite:///PATH or postgresql+psycopg://...)"
    if parsed.get_backend_name() not in {"sqlite", "postgresql"}:
        return f"{parsed.get_backend_name()} is not supported: use SQLite or PostgreSQL"
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        return f"unknown database driver {parsed.drivername!r}: use postgresql+psycopg://"
    driver = getattr(dialect, "driver", "")
    module = {"psycopg": "psycopg", "psycopg2": "psycopg2", "pysqlite": "sqlite3"}.get(driver)
    if module and importlib.util.find_spec(module) is None:
        extra = " (pip install 'countersign[postgresql]')" if "psycopg" in module else ""
        return f"the database driver {module} is not installed{extra}"
    return None


_SINGLE_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "mail.public_url": _public_url,
    "mail.domain": _domain,
    "mail.reply_local": _reply_local,
    "api.keys": _api_keys,
    "api.key_limits": _key_limits,
    "hooks.endpoints": _hook_endpoints,
    "apply.url": _apply_url,
    "leases.owner_timeout": _owner_timeout,
    "web.trusted_proxies": _trusted_proxies,
    "database.url": lambda url: database_problem(str(url)),
    "log_level": lambda level: (
        None
        if str(level) in {"debug", "info", "warning", "error"}
        else f"must be one of debug, info, warning, error, got {level!r}"
    ),
}
