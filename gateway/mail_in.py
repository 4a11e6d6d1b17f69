"""Mail in, after it is stored: read each inbox message and hand it to the workflow.

Both doors (SMTP, IMAP) store first and answer after; this is the one
pipeline behind them.  gateway.reading says what a message is (bounce,
automated, command); here its headers are also checked for the trusted
server's DMARC verdict and for the notices of ours it replies to.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import authres

from config import Config
from gateway import metrics
from gateway.offload import WorkerProcess
from gateway.reading import read_parsed
from store.db import Store
from workflow.inbox import MailReading, Readings, Received, process_due
from workflow.policy import Policy

HEADER_BYTES = 256 * 1024  # the header block looked at; a longer one is cut, not parsed whole
MAX_AUTH_RESULTS = 20
MAX_REFERENCES = 20

# Replies waiting together that make reading worth a process of its own.  Eight
# clients sending at once keep batches at about eight; people answering one by
# one, at one or two.
BURST = 5

_DECISIONS = {"accepted": "accept", "declined": "decline"}
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_REFERENCE = re.compile(r"<([^<>\s]{1,250})>")


@dataclass(frozen=True)
class InboundSettings:
    reply_local: str = "confirm"
    mail_domain: str = "countersign.localhost"
    trusted_authserv_id: str | None = None

    @classmethod
    def from_config(cls, config: Config) -> InboundSettings:
        return cls(
            reply_local=config.mail.reply_local,
            mail_domain=config.mail.domain,
            trusted_authserv_id=config.inbound.trusted_authserv_id or None,
        )


def read_inbound(item: Received, settings: InboundSettings) -> MailReading:
    """What one stored message says, and whether its sender is vouched for."""
    reading, parsed = read_parsed(
        item.raw,
        recipients=item.recipients,
        envelope_sender=item.envelope_from,
        reply_local=settings.reply_local,
        mail_domain=settings.mail_domain,
    )
    headers = _headers(parsed, item.raw)
    return MailReading(
        message_id=reading.message_id,
        sender=reading.sender,
        outcome=reading.outcome,
        code=reading.code,
        reason=reading.reason,
        bounced_recipients=reading.bounced_recipients,
        bounced_request=reading.bounced_request,
        authenticated=dmarc_passed(headers, settings.trusted_authserv_id),
        replied_to=our_references(headers, settings.mail_domain),
    )


def header_block(raw: bytes) -> Message:
    """The headers alone (cheap: no MIME parse), for the two checks below."""
    head = raw[:HEADER_BYTES]
    end = _HEADER_END.search(head)
    return BytesHeaderParser(policy=compat32).parsebytes(head[: end.start()] if end else head)


def _headers(parsed: Message | None, raw: bytes) -> Message:
    """The reader's own parse when its headers are header_block's, saving a second parse.

    Both are compat32 parses of the same bytes up to the first empty line; they
    differ only when that line lies past HEADER_BYTES (header_block cuts there).
    """
    if parsed is not None and _HEADER_END.search(raw, 0, HEADER_BYTES) is not None:
        return parsed
    return header_block(raw)


def dmarc_passed(headers: Message, trusted: str | None) -> bool:
    """True without a trusted server configured; else its topmost verdict must say dmarc=pass.

    Only headers the trusted server wrote count.  Its topmost one is taken: a
    sender can write an Authentication-Results of its own, but below it, since
    the trusted server adds its header on top when the mail reaches it.
    """
    if trusted is None:
        return True
    for value in (headers.get_all("Authentication-Results") or [])[:MAX_AUTH_RESULTS]:
        parsed = _auth_results(value)
        if parsed is None or str(parsed.authserv_id).lower() != trusted.lower():
            continue
        return any(
            str(result.method).lower() == "dmarc" and str(result.result).lower() == "pass"
            for result in parsed.results
        )
    return False


def _auth_results(value: object) -> Any:
    """The parsed header, or None when it does not parse (then it vouches for nothing)."""
    try:
        return authres.AuthenticationResultsHeader.parse_value(_unfold(value))
    except Exception:  # authres raises its own syntax errors, and worse on junk
        return None


def our_references(headers: Message, mail_domain: str) -> tuple[str, ...]:
    """The Message-IDs of our own domain in In-Reply-To and References (as <id>)."""
    suffix = "@" + mail_domain.lower()
    found: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in (headers.get_all(name) or [])[:MAX_REFERENCES]:
            for match in _REFERENCE.finditer(_unfold(value)[:20_000]):
                if match.group(1).lower().endswith(suffix) and f"<{match.group(1)}>" not in found:
                    found.append(f"<{match.group(1)}>")
    return tuple(found[:MAX_REFERENCES])


def _unfold(value: object) -> str:
    return re.sub(r"\r?\n", " ", str(value))


class MailIn:
    """The "inbox" sweep: process what the doors stored, counting outcomes for /metrics.

    Under a burst (BURST messages or more claimed together) the reading moves to a process of its
    own (gateway/offload.py), on the other core: reading is pure CPU on bytes,
    and in this process it took turns, under the GIL, with SMTP intake and the
    decisions.  Until that process is up, or without a spare core, or after it
    broke, the sweep reads itself, as it always could.
    """

    def __init__(self, store: Store, config: Config, *, offload: bool | None = None) -> None:
        self.store = store
        self.policy = Policy.from_config(config)
        self.settings = InboundSettings.from_config(config)
        self.reader = WorkerProcess("reading", warm_reading, enabled=offload)

    def read(self, item: Received) -> MailReading:
        return read_inbound(item, self.settings)

    def read_ahead(self, items: Sequence[Received]) -> Readings:
        """Start reading a batch: in the reading process if it is up, else when asked, here."""
        if len(items) >= BURST:
            self.reader.start()  # returns at once; used from a later batch on
        pending = self.reader.submit(read_all, items, self.settings) if items else None
        if pending is None:
            return lambda: read_all(items, self.settings)
        return lambda: self._collect(pending, items)

    def _collect(
        self, pending: Future[list[MailReading]], items: Sequence[Received]
    ) -> list[MailReading]:
        done: list[MailReading] | None = self.reader.result(pending)
        return done if done is not None else read_all(items, self.settings)

    def process_due(self, now: datetime | None = None) -> int:
        return process_due(
            self.store, self.policy, self.read, now, on_outcome=_count, read_ahead=self.read_ahead
        )

    def close(self) -> None:
        """Stop the reading process, if it runs (after the batch in hand)."""
        self.reader.close()


def read_all(items: Sequence[Received], settings: InboundSettings) -> list[MailReading]:
    """Read a batch (in the reading process, or here); module-level, so it crosses processes."""
    return [read_inbound(item, settings) for item in items]


def warm_reading() -> None:
    """In the reading process, before its first batch: import and run what reading needs."""
    sample = b"From: a@example.com\r\nSubject: Re: x\r\n\r\nAccept, thanks\r\n"
    read_all([Received(0, "smtp", sample, (), None, 1)], InboundSettings())


def _count(item: Received, outcome: str) -> None:
    metrics.count_mail_received(outcome)
    if outcome in _DECISIONS:
        metrics.count_command(_DECISIONS[outcome], item.channel)
    elif outcome.startswith("refused:"):
        metrics.count_command("invalid", item.channel)


__all__: Sequence[str] = ["InboundSettings", "MailIn", "dmarc_passed", "read_inbound"]
