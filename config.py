"""Configuration: a TOML file, every key overridable by the environment.

Where the file comes from: ``--config PATH``, else ``COUNTERSIGN_CONFIG``, else
``countersign.toml`` in the working directory if it exists, else nothing at all
(the embedded defaults run a complete daemon).  Any key can then be overridden
as ``COUNTERSIGN_<SECTION>_<KEY>`` (top-level keys as ``COUNTERSIGN_<KEY>``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import formataddr
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from countersign.config_check import (
    ConfigError,
    Problem,
    Reading,
    check_values,
    flat_values,
    key_name,
    parse_duration,
    parse_key_limits,
    read_text_file,
)

ENV_PREFIX = "COUNTERSIGN_"
DEFAULT_FILE = "countersign.toml"
# COUNTERSIGN_* variables that are not configuration keys: the file's name, and the
# test suites' own settings (COUNTERSIGN_TEST_DATABASE_URL, ...).
NOT_KEYS = ("COUNTERSIGN_CONFIG", "COUNTERSIGN_TEST_")


# Re-exported: the rest of the project knows them from here.
__all__ = [
    "Config",
    "ConfigError",
    "Inspection",
    "Problem",
    "load_config",
    "parse_duration",
    "parse_key_limits",
]


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""  # empty: sqlite:///{data_dir}/countersign.db


@dataclass(frozen=True)
class MailConfig:
    domain: str = "countersign.localhost"
    from_: str = ""  # empty: Countersign <contacts@{domain}>
    reply_local: str = "confirm"
    public_url: str = "http://127.0.0.1:8080"
    brand_name: str = "Countersign"  # in notices and on the page; the reader's marks stay
    support_address: str = ""
    logo_url: str = ""


@dataclass(frozen=True)
class InboundConfig:
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    max_bytes: int = 5_242_880
    require_sender_match: bool = True
    trusted_authserv_id: str | None = None
    imap_host: str | None = None
    imap_port: int = 993
    imap_user: str | None = None
    imap_password: str | None = None
    imap_folder: str = "INBOX"
    imap_processed_folder: str = "Processed"
    imap_tls: bool = True
    imap_starttls: bool = False  # with imap_tls = false: upgrade a plain connection (port 143)
    # Wrong codes from one source (client address) before its wrong codes are
    # answered 429 / 450 (a valid code always works), and over which window.
    bad_code_limit: int = 10
    bad_code_window: str = "1h"
    # Wrong codes naming one request, from any source, before further ones are refused.
    bad_code_request_limit: int = 200


@dataclass(frozen=True)
class OutboundConfig:
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    starttls: bool = False
    timeout: str = "30s"
    first_retry: str = "1m"
    give_up_after: str = "2d"


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    sign_in_valid: str = "15m"  # how long a mailed sign-in link works
    session_valid: str = "12h"  # how long a signed-in browser stays signed in
    # A listener of its own for /metrics (off: /metrics on the web port).
    metrics_host: str | None = None
    metrics_port: int | None = None
    # Addresses or networks of reverse proxies whose X-Forwarded-For names the client.
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class RequestsConfig:
    expire_after: str = "7d"
    remind_after: tuple[str, ...] = ("2d", "5d")


@dataclass(frozen=True)
class SchedulerConfig:
    sweep_every: str = "30s"


@dataclass(frozen=True)
class LeasesConfig:
    # A claim (inbox, outbox, IMAP reader) whose daemon's heartbeat is older is free again.
    owner_timeout: str = "15s"


@dataclass(frozen=True)
class ApiConfig:
    # name -> key; TOML: [api] keys = { billing = "secret", ... }
    keys: Mapping[str, str] = field(default_factory=dict)
    # key name -> its own limits, e.g. { panel = "open_requests_per_account=50" };
    # a key not named here has none (it is the provider's own system).
    key_limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitsConfig:
    """What anyone can make Countersign send through the account pages (0: no limit)."""

    sign_in_per_address: int = 3
    sign_in_per_client: int = 10
    sign_in_window: str = "1h"
    open_requests_per_account: int = 20
    mails_per_recipient: int = 10  # confirm-request and reminder mails
    mail_window: str = "1d"


@dataclass(frozen=True)
class TemplatesConfig:
    dir: str = ""  # files here override templates/ of the same path (en/refused.txt.j2, web/...)


@dataclass(frozen=True)
class HookEndpoint:
    url: str = ""
    secret: str = ""
    events: tuple[str, ...] = ()  # empty: every type


@dataclass(frozen=True)
class HooksConfig:
    # TOML: [[hooks.endpoints]] url = "...", secret = "...", events = [...]
    endpoints: tuple[HookEndpoint, ...] = ()
    timeout: str = "10s"
    first_retry: str = "10s"
    give_up_after: str = "3d"


@dataclass(frozen=True)
class ApplyConfig:
    url: str = ""  # empty: a change is applied to Countersign's own store at once
    secret: str = ""
    timeout: str = "30s"
    first_retry: str = "10s"
    give_up_after: str = "1d"


@dataclass(frozen=True)
class Config:
    data_dir: str = "./var"
    log_level: str = "info"  # --log-level and -v win; SIGHUP reads it again
    shutdown_grace: str = "10s"  # how long a stop waits for the work in hand
    retention: str = ""  # e.g. "90d": serve purges finished requests older than that daily
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    web: WebConfig = field(default_factory=WebConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    leases: LeasesConfig = field(default_factory=LeasesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    apply: ApplyConfig = field(default_factory=ApplyConfig)
    templates: TemplatesConfig = field(default_factory=TemplatesConfig)

    # Derived values: the defaults that depend on other keys.
    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{Path(self.data_dir) / 'countersign.db'}"

    @property
    def mail_from(self) -> str:
        brand = self.mail.brand_name or "Countersign"
        return self.mail.from_ or formataddr((brand, f"contacts@{self.mail.domain}"))

    @property
    def outbox_dir(self) -> Path:
        return Path(self.data_dir) / "outbox"

    @property
    def expire_after(self) -> timedelta:
        return parse_duration(self.requests.expire_after)

    @property
    def remind_after(self) -> tuple[timedelta, ...]:
        return tuple(sorted(parse_duration(d) for d in self.requests.remind_after))

    @property
    def sweep_every(self) -> timedelta:
        return parse_duration(self.scheduler.sweep_every)

    @property
    def owner_timeout(self) -> timedelta:
        return parse_duration(self.leases.owner_timeout)


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or say which key is wrong."""
    text = isinstance(value, str)
    if hint is bool:
        if text:
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint == int | None:
        return None if value is None or value == "" else _coerce(key, int, value)
    if hint is int:
        # Not int(value) on anything: true would be 1 and 8025.9 would be 8025.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    # By origin, not by name: str(Mapping[str, str]) is "collections.abc.Mapping[...]".
    origin = get_origin(hint)
    if origin is tuple:
        items = _env_list(key, value) if text else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(str(item) for item in items)
    if origin is Mapping:
        mapping = _env_json(key, value) if text else value
        if not isinstance(mapping, dict):
            raise ConfigError(f"{key}: expected a table of name = value, got {value!r}")
        return {str(k): str(v) for k, v in mapping.items()}
    optional = origin is types.UnionType and type(None) in get_args(hint)
    if value is None or value == "":
        return None if optional else ""
    if not isinstance(value, str):
        # A TOML number or table where text is expected is a mistake, not text.
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _env_list(key: str, value: str) -> Any:
    stripped = value.strip()
    if stripped.startswith("["):
        return _env_json(key, stripped)
    return [part.strip() for part in stripped.split(",") if part.strip()]


def _env_json(key: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ConfigError(f"{key}: expected JSON, got {value!r}") from None


@dataclass
class Inspection:
    """A configuration as read: the values, where each came from, and what is wrong."""

    config: Config
    sources: dict[str, str]  # "section.key" -> "file:line", "env NAME" or "default"
    problems: list[Problem]
    file: Path | None = None


def _build(cls: type[Any], prefix: str, raw: Mapping[str, Any], reading: Reading) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    known = set()
    for fld in dataclasses.fields(cls):
        name = key_name(fld.name)
        known.add(name)
        dotted = f"{prefix}{name}"
        hint = hints[fld.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                reading.problem(dotted, f"expected a [{name}] table")
                section = {}
            values[fld.name] = _build(hint, f"{dotted}.", section, reading)
            continue
        if _is_table_list(hint):
            values[fld.name] = _build_tables(get_args(hint)[0], dotted, raw.get(name, []), reading)
            continue
        _read_value(dotted, hint, raw.get(name), name in raw, reading, values, fld.name)
    for unknown in sorted(set(raw) - known):
        reading.problem(f"{prefix}{unknown}", "unknown configuration key")
    return cls(**values)


def _is_table_list(hint: Any) -> bool:
    args = get_args(hint)
    return get_origin(hint) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def _build_tables(cls: type[Any], key: str, raw: Any, reading: Reading) -> tuple[Any, ...]:
    """A TOML array of tables (``[[hooks.endpoints]]``); from the file only, not the environment."""
    reading.sources[key] = reading.source(key) if raw else "default"
    if env_variable(key) in reading.env:
        reading.problem(key, "set in the file as [[tables]], not in the environment", "environment")
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        reading.problem(key, f"expected [[{key}]] tables")
        return ()
    file_only = Reading(reading.file, "", {})
    file_only.lines = reading.lines
    built = tuple(_build(cls, f"{key}[{i}].", item, file_only) for i, item in enumerate(raw))
    reading.problems.extend(file_only.problems)
    return built


def _read_value(
    dotted: str,
    hint: Any,
    in_file: Any,
    present: bool,
    reading: Reading,
    values: dict[str, Any],
    field_name: str,
) -> None:
    env_name = env_variable(dotted)
    if env_name in reading.env:
        raw, source = reading.env[env_name], f"env {env_name}"
    elif present:
        raw, source = in_file, reading.source(dotted)
    else:
        reading.sources[dotted] = "default"
        return
    reading.sources[dotted] = source
    try:
        values[field_name] = _coerce(dotted, hint, raw)
    except ConfigError as error:
        reading.problem(dotted, str(error), source)


def env_variable(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _unknown_variables(reading: Reading, keys: set[str]) -> None:
    known = {env_variable(key) for key in keys}
    for name in sorted(reading.env):
        if name.startswith(ENV_PREFIX) and name not in known and not name.startswith(NOT_KEYS):
            reading.problems.append(Problem(name, "environment", "unknown configuration variable"))


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("COUNTERSIGN_CONFIG"):
        return Path(env["COUNTERSIGN_CONFIG"])
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def inspect_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Inspection:
    """Read the configuration and report every problem, each with its key and source."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    text, unreadable = read_text_file(file) if file is not None else ("", None)
    reading = Reading(file, text, env)
    raw: dict[str, Any] = {}
    if unreadable is not None:
        reading.problems.append(unreadable)
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            reading.problems.append(Problem("", str(file), f"not valid TOML: {error}"))
    config: Config = _build(Config, "", raw, reading)
    values = flat_values(config)
    _unknown_variables(reading, set(values))
    for key, what in check_values(values):
        reading.problem(key, what, reading.sources.get(key, "default"))
    return Inspection(config, reading.sources, reading.problems, file)


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The configuration in force: file (if any), then environment overrides."""
    inspection = inspect_config(path, env)
    if inspection.problems:
        first, more = inspection.problems[0], len(inspection.problems) - 1
        also = f" (and {more} more: see 'countersign config check')" if more else ""
        raise ConfigError(" ".join(f"{first}{also}".split()))
    return inspection.config
