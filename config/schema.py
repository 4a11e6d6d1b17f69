"""The configuration's schema: every section and key, its default, and what follows from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from email.utils import formataddr
from pathlib import Path

from countersign.config.values import parse_duration

ENV_PREFIX = "COUNTERSIGN_"
DEFAULT_FILE = "countersign.toml"
# COUNTERSIGN_* variables that are not configuration keys: the file's name, and the
# test suites' own settings (COUNTERSIGN_TEST_DATABASE_URL, ...).
NOT_KEYS = ("COUNTERSIGN_CONFIG", "COUNTERSIGN_TEST_")


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
