"""The knobs the acts need, taken from the configuration once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from config import Config


@dataclass(frozen=True)
class Policy:
    expire_after: timedelta = timedelta(days=7)
    remind_after: tuple[timedelta, ...] = (timedelta(days=2), timedelta(days=5))
    mail_domain: str = "countersign.localhost"
    require_sender_match: bool = True

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        return cls(
            expire_after=config.expire_after,
            remind_after=config.remind_after,
            mail_domain=config.mail.domain,
            require_sender_match=config.inbound.require_sender_match,
        )
