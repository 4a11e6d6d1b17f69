"""Mail in, after it is stored: read each inbox message and hand it to the workflow.

Both doors (SMTP, IMAP) store first and answer after; this is the one
pipeline behind them.  gateway.reading says what a message is (bounce,
automated, command); here its headers are also checked for the trusted
server's DMARC verdict and for the notices of ours it replies to.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from functools import partial
from typing import Any

import authres

from countersign.config import Config
from countersign.gateway import metrics
from countersign.gateway.offload import WorkerProcess, log_like_the_daemon
from countersign.gateway.reading import read_parsed
from countersign.store.db import Store
from countersign.store.health import Health
from countersign.store.leases import give_back
from countersign.store.models import InboxMessage
from countersign.workflow import hooks
from countersign.workflow.inbox import MailReading, Received, process_due
from countersign.workflow.policy import Policy

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
        comment=reading.comment,
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

    Under a burst (BURST or more messages in one pass) the processing moves to
    a process of its own (gateway/offload.py) on the other core: reading and
    deciding are CPU work that, in the daemon's process, took turns under the
    GIL with SMTP intake, and SMTP intake then answered no faster than replies
    were decided.  That process writes to the same store (on SQLite the two
    take turns through store.db.SqliteWriter).  Until it is up, without a spare
    core, or after it broke, the sweep processes here, as it always could.
    """

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        offload: bool | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_outcome = on_outcome  # besides /metrics (the benchmark times each decision)
        self.policy = Policy.from_config(config)
        self.settings = InboundSettings.from_config(config)
        self.owner: int | None = None  # the worker id its claims name (store/leases.py)
        self._unclean = False  # a pass raised: what it still held is given back first
        self.worker = WorkerProcess(
            "mail-in", partial(start_processing, logging.getLogger().level), enabled=offload
        )

    def read(self, item: Received) -> MailReading:
        return read_inbound(item, self.settings)

    def process_due(self, now: datetime | None = None) -> int:
        if self._unclean:  # the last pass was cut short (the store lost): its claims back
            give_back(self.store, InboxMessage, self.owner, keep=set())
            self._unclean = False
        try:
            return self._process_due(now)
        except BaseException:
            self._unclean = True
            raise

    def _process_due(self, now: datetime | None) -> int:
        elsewhere: Processed | None = self.worker.call(
            process_elsewhere, self.config, now, self.owner
        )
        if elsewhere is not None:
            self._counted(elsewhere.outcomes)
            for topic in elsewhere.woken:  # its commits' wake-ups, for this process's sweeps
                self.store.fire(topic)
            return len(elsewhere.outcomes)
        outcomes: list[Outcome] = []
        handled = process_due(
            self.store,
            self.policy,
            self.read,
            now,
            on_outcome=partial(_note, outcomes),
            owner=self.owner,
        )
        self._counted(outcomes)
        if handled >= BURST:
            self.worker.start()  # returns at once; used from a later pass on
        return handled

    def _counted(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            _count(outcome)
            if self.on_outcome is not None:
                self.on_outcome(outcome)

    def close(self) -> None:
        """Stop the mail-in process, if it runs (after the pass in hand)."""
        self.worker.close()


@dataclass(frozen=True)
class Outcome:
    """What became of one inbox message."""

    inbox_id: int
    channel: str
    outcome: str
    committed: float  # time.time() once its batch committed


@dataclass(frozen=True)
class Processed:
    """What a pass in the mail-in process did: each message's outcome, and the topics woken."""

    outcomes: list[Outcome]
    woken: list[str]


def _note(outcomes: list[Outcome], item: Received, outcome: str) -> None:
    # Called once the batch has committed (or the message was dealt with alone).
    outcomes.append(Outcome(item.id, item.channel, outcome, time.time()))


PASS = 0.5  # seconds of batches per call into the mail-in process, at most
_WAKES = ("apply", "outbox", "inbox", "hooks")
_here: dict[str, tuple[MailIn, list[str]]] = {}  # in the mail-in process: its own store


def process_elsewhere(config: Config, now: datetime | None, owner: int | None) -> Processed:
    """In the mail-in process: batch after batch while any is due, for PASS at most.

    Several batches a call: each call is a round trip through the daemon's
    process, whose threads wait for the GIL its event loop holds under load.
    """
    mail_in, woken = _mail_in_here(config)
    outcomes: list[Outcome] = []
    woken.clear()
    deadline = time.monotonic() + PASS
    while time.monotonic() < deadline:
        handled = process_due(
            mail_in.store,
            mail_in.policy,
            mail_in.read,
            now,
            on_outcome=partial(_note, outcomes),
            owner=owner,  # the daemon's: this process lives and dies with it
        )
        if handled == 0:
            break
    return Processed(outcomes, sorted(set(woken)))


def _mail_in_here(config: Config) -> tuple[MailIn, list[str]]:
    if config.database_url not in _here:
        store = Store(config.database_url)
        hooks.attach(store, config)  # a decision by mail queues its events too
        store.health = Health(quiet=True)  # the daemon logs an outage; its heartbeat, the end
        woken: list[str] = []
        for topic in _WAKES:
            store.on_commit(topic, partial(woken.append, topic))
        _here[config.database_url] = (MailIn(store, config, offload=False), woken)
    return _here[config.database_url]


def start_processing(level: int) -> None:
    """In the mail-in process, before its first pass: log like the daemon, import the reader."""
    log_like_the_daemon(level)
    sample = b"From: a@example.com\r\nSubject: Re: x\r\n\r\nAccept, thanks\r\n"
    read_inbound(Received(0, "smtp", sample, (), None, 1), InboundSettings())


def _count(done: Outcome) -> None:
    metrics.count_mail_received(done.outcome)
    if done.outcome in _DECISIONS:
        metrics.count_command(_DECISIONS[done.outcome], done.channel)
    elif done.outcome.startswith("refused:"):
        metrics.count_command("invalid", done.channel)


__all__: Sequence[str] = ["InboundSettings", "MailIn", "dmarc_passed", "read_inbound"]
