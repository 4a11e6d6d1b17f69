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

ENV_PREFIX = "COUNTERSIGN_"
DEFAULT_FILE = "countersign.toml"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


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
    bad_code_limit: int = 5
    bad_code_window: str = "1h"


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
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    web: WebConfig = field(default_factory=WebConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    leases: LeasesConfig = field(default_factory=LeasesConfig)
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


def _key_name(field_name: str) -> str:
    # `from` is a Python keyword; the dataclass field is `from_`.
    return field_name.rstrip("_")


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


def _build(cls: type[Any], prefix: str, raw: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    known = set()
    for fld in dataclasses.fields(cls):
        name = _key_name(fld.name)
        known.add(name)
        dotted = f"{prefix}{name}"
        hint = hints[fld.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                raise ConfigError(f"{dotted}: expected a [{name}] table")
            values[fld.name] = _build(hint, f"{dotted}.", section, env)
            continue
        env_name = ENV_PREFIX + dotted.replace(".", "_").upper()
        if _is_table_list(hint):
            values[fld.name] = _build_tables(get_args(hint)[0], dotted, raw.get(name, []))
        elif env_name in env:
            values[fld.name] = _coerce(dotted, hint, env[env_name])
        elif name in raw:
            values[fld.name] = _coerce(dotted, hint, raw[name])
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"unknown configuration key: {prefix}{sorted(unknown)[0]}")
    return cls(**values)


def _is_table_list(hint: Any) -> bool:
    args = get_args(hint)
    return get_origin(hint) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def _build_tables(cls: type[Any], key: str, raw: Any) -> tuple[Any, ...]:
    """A TOML array of tables (``[[hooks.endpoints]]``); from the file only, not the environment."""
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        raise ConfigError(f"{key}: expected [[{key}]] tables")
    return tuple(_build(cls, f"{key}[{index}].", item, {}) for index, item in enumerate(raw))


def _validate_hooks(config: Config) -> None:
    for index, endpoint in enumerate(config.hooks.endpoints):
        key = f"hooks.endpoints[{index}]"
        if not endpoint.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url: expected an http:// or https:// address")
        if not endpoint.secret:
            raise ConfigError(f"{key}.secret: every endpoint needs a secret to sign with")
        unknown = set(endpoint.events) - set(HOOK_EVENT_TYPES)
        if unknown:
            raise ConfigError(f"{key}.events: unknown event type {sorted(unknown)[0]!r}")
    if config.apply.url and not config.apply.url.startswith(("http://", "https://")):
        raise ConfigError("apply.url: expected an http:// or https:// address")


HOOK_EVENT_TYPES = ("request.created", "request.state_changed", "validator.decided")


def _validate(config: Config) -> None:
    for key, value in (
        ("requests.expire_after", config.requests.expire_after),
        ("scheduler.sweep_every", config.scheduler.sweep_every),
        ("outbound.first_retry", config.outbound.first_retry),
        ("outbound.give_up_after", config.outbound.give_up_after),
        ("outbound.timeout", config.outbound.timeout),
        ("inbound.bad_code_window", config.inbound.bad_code_window),
        ("leases.owner_timeout", config.leases.owner_timeout),
        ("hooks.timeout", config.hooks.timeout),
        ("hooks.first_retry", config.hooks.first_retry),
        ("hooks.give_up_after", config.hooks.give_up_after),
        ("apply.timeout", config.apply.timeout),
        ("apply.first_retry", config.apply.first_retry),
        ("apply.give_up_after", config.apply.give_up_after),
        *(("requests.remind_after", d) for d in config.requests.remind_after),
    ):
        try:
            parse_duration(value)
        except ConfigError as error:
            raise ConfigError(f"{key}: {error}") from None
    if config.sweep_every <= timedelta(0):
        raise ConfigError("scheduler.sweep_every: must be more than 0s")
    _validate_hooks(config)
    if config.owner_timeout < timedelta(seconds=3):
        # Heartbeats come every third of it: less would free live daemons' work.
        raise ConfigError("leases.owner_timeout: must be at least 3s")


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("COUNTERSIGN_CONFIG"):
        return Path(env["COUNTERSIGN_CONFIG"])
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The configuration in force: file (if any), then environment overrides."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read {file}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{file}: {error}") from None
    config: Config = _build(Config, "", raw, env)
    _validate(config)
    return config
