"""The knobs the acts need, taken from the configuration once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from countersign.config import Config, parse_duration


@dataclass(frozen=True)
class Policy:
    expire_after: timedelta = timedelta(days=7)
    remind_after: tuple[timedelta, ...] = (timedelta(days=2), timedelta(days=5))
    mail_domain: str = "countersign.localhost"
    require_sender_match: bool = True
    # Wrong codes from one source before its wrong codes are refused, over which window,
    # and from all sources on one request (workflow/guess_limits.py).
    bad_code_limit: int = 10
    bad_code_window: timedelta = timedelta(hours=1)
    bad_code_request_limit: int = 200

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(
            expire_after=config.expire_after,
            remind_after=config.remind_after,
            mail_domain=config.mail.domain,
            require_sender_match=config.inbound.require_sender_match,
            bad_code_limit=config.inbound.bad_code_limit,
            bad_code_window=parse_duration(config.inbound.bad_code_window),
            bad_code_request_limit=config.inbound.bad_code_request_limit,
        )
