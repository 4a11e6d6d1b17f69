"""Delivering the outbox: render, compose, hand over to an SMTP relay or a Maildir.

One pass claims a batch of due notices (leased in the store), renders and
composes them in a worker thread, sends them over a few reused SMTP
connections (or writes them into the Maildir), then records every outcome in
one transaction.  4xx replies, timeouts and dropped connections are retried
with backoff and the same Message-ID; 5xx is permanent.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from config import Config, parse_duration
from gateway import metrics
from gateway.compose import compose_notice
from gateway.render import render_notice
from rules.states import CODE_NOTICES
from store.db import Store
from workflow.outbox import Envelope, RetryPolicy, claim_due, mark_failed, mark_sent

log = logging.getLogger("countersign.delivery")
BATCH = 200
CONNECTIONS = 4  # SMTP connections per pass: round trips, not CPU, bound one connection


@dataclass(frozen=True)
class Ready:
    """A composed notice, flattened to the bytes that go on the wire."""

    outbox_id: int
    recipient: str
    data: bytes


@dataclass(frozen=True)
class Outcome:
    outbox_id: int
    error: str | None = None  # None: handed over
    permanent: bool = False

    @property
    def label(self) -> str:
        """The metrics label: sent, retry or failed."""
        if self.error is None:
            return "sent"
        return "failed" if self.permanent else "retry"


class Transport(Protocol):
    async def send(self, batch: Sequence[Ready]) -> list[Outcome]: ...


# --- composing -------------------------------------------------------------------------


@dataclass(frozen=True)
class MailSettings:
    domain: str
    from_header: str
    reply_local: str
    public_url: str

    @classmethod
    def from_config(cls, config: Config) -> MailSettings:
        return cls(
            domain=config.mail.domain,
            from_header=config.mail_from,
            reply_local=config.mail.reply_local,
            public_url=config.mail.public_url.rstrip("/"),
        )

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.from_header)[1]


def compose(envelope: Envelope, settings: MailSettings) -> Message:
    """The notice as a message: rendered in the recipient's language, threaded."""
    code = envelope.code if envelope.kind in CODE_NOTICES else None
    request_id = envelope.request["id"] if envelope.request else 0
    reply_address = f"{settings.reply_local}+{code}@{settings.domain}" if code else None
    context = {
        "request": envelope.request,
        "recipient": envelope.recipient,
        "code": code,
        "link": f"{settings.public_url}/confirm/{request_id}?token={code}" if code else None,
        "reply_address": reply_address,
        "reason": envelope.context.get("reason"),
        "public_url": settings.public_url,
    }
    notice = render_notice(envelope.kind, envelope.language, context)
    root = envelope.thread_root if envelope.thread_root != envelope.message_id else None
    return compose_notice(
        notice,
        kind=envelope.kind,
        request_id=request_id,
        to_address=envelope.to_address,
        from_header=settings.from_header,
        message_id=envelope.message_id,
        reply_to=reply_address,
        thread_root=root,
    )


def compose_all(
    envelopes: Sequence[Envelope], settings: MailSettings
) -> tuple[list[Ready], list[Outcome]]:
    """Compose every envelope; one that cannot be composed fails alone, for good."""
    ready: list[Ready] = []
    broken: list[Outcome] = []
    for envelope in envelopes:
        try:
            # Flattened here, in the worker thread: on the loop it would stall every connection.
            data = compose(envelope, settings).as_bytes()
            ready.append(Ready(envelope.outbox_id, str(envelope.to_address), data))
        except Exception as error:  # a bad address or template must not stop the others
            log.exception("cannot compose notice %s", envelope.outbox_id)
            broken.append(Outcome(envelope.outbox_id, f"cannot compose: {error}", permanent=True))
    return ready, broken


# --- transports ------------------------------------------------------------------------


class MaildirTransport:
    """No relay configured: every message becomes a file in ``{data_dir}/outbox``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, batch: Sequence[Ready]) -> list[Outcome]:
        return await asyncio.to_thread(self._write, batch)

    def _write(self, batch: Sequence[Ready]) -> list[Outcome]:
        box = mailbox.Maildir(self.path, create=True)
        outcomes = []
        for notice in batch:
            try:
                box.add(notice.data)  # written to tmp/, then renamed into new/
                outcomes.append(Outcome(notice.outbox_id))
            except OSError as error:
                outcomes.append(Outcome(notice.outbox_id, f"cannot write to {self.path}: {error}"))
        return outcomes


class SmtpTransport:
    """An SMTP relay, over a few connections reused for a whole batch."""

    def __init__(self, config: Config, envelope_sender: str) -> None:
        out = config.outbound
        self.host = out.smtp_host or "localhost"
        self.port = out.smtp_port
        self.username = out.smtp_user
        self.password = out.smtp_password
        self.starttls = out.starttls
        self.timeout = parse_duration(out.timeout).total_seconds()
        self.local_hostname = config.mail.domain
        self.envelope_sender = envelope_sender

    def _client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            start_tls=self.starttls,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )

    async def send(self, batch: Sequence[Ready]) -> list[Outcome]:
        lanes = [list(batch[i::CONNECTIONS]) for i in range(min(CONNECTIONS, len(batch)))]
        results = await asyncio.gather(*(self._send_lane(lane) for lane in lanes))
        return [outcome for lane in results for outcome in lane]

    async def _send_lane(self, lane: list[Ready]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        client: aiosmtplib.SMTP | None = None
        try:
            for notice in lane:
                if client is None:
                    client = self._client()
                    try:
                        await client.connect()
                    except (aiosmtplib.SMTPException, OSError) as error:
                        # The relay is down: everything left waits for the next attempt.
                        reason = f"relay {self.host}:{self.port} unreachable: {error}"
                        done = {o.outbox_id for o in outcomes}
                        left = [n.outbox_id for n in lane if n.outbox_id not in done]
                        return outcomes + [Outcome(i, reason) for i in left]
                outcome, healthy = await self._send_one(client, notice)
                outcomes.append(outcome)
                if not healthy:
                    client.close()
                    client = None
            return outcomes
        finally:
            if client is not None and client.is_connected:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()

    async def _send_one(self, client: aiosmtplib.SMTP, notice: Ready) -> tuple[Outcome, bool]:
        """Send one message; the flag says whether the connection can carry the next."""
        outbox_id = notice.outbox_id
        try:
            await client.sendmail(self.envelope_sender, [notice.recipient], notice.data)
            return Outcome(outbox_id), True
        except aiosmtplib.SMTPRecipientsRefused as refused:
            first = refused.recipients[0]
            return self._reply(outbox_id, first.code, first.message), True
        except aiosmtplib.SMTPResponseException as error:
            return self._reply(outbox_id, error.code, error.message), client.is_connected
        except (aiosmtplib.SMTPException, OSError) as error:
            # Dropped connection or timeout: did the relay take it? Unknown: retry.
            return Outcome(outbox_id, f"connection lost: {error}"), False

    @staticmethod
    def _reply(outbox_id: int, code: int, message: str) -> Outcome:
        return Outcome(outbox_id, f"{code} {message}".strip(), permanent=500 <= code < 600)


def _count(envelopes: Sequence[Envelope], outcomes: Sequence[Outcome], at: datetime) -> None:
    queued = {envelope.outbox_id: envelope.queued_at for envelope in envelopes}
    for outcome in outcomes:
        metrics.count_mail_sent(outcome.label)
        if outcome.error is None:
            metrics.observe_delivery_latency((at - queued[outcome.outbox_id]).total_seconds())


def make_transport(config: Config) -> Transport:
    settings = MailSettings.from_config(config)
    if config.outbound.smtp_host:
        return SmtpTransport(config, settings.envelope_sender)
    return MaildirTransport(config.outbox_dir)


# --- one pass ----------------------------------------------------------------------------


class Deliverer:
    def __init__(self, store: Store, config: Config, transport: Transport | None = None) -> None:
        self.store = store
        self.settings = MailSettings.from_config(config)
        self.transport = transport or make_transport(config)
        self.retry = RetryPolicy(
            first_retry=parse_duration(config.outbound.first_retry),
            give_up_after=parse_duration(config.outbound.give_up_after),
        )

    async def deliver_due(self, now: datetime | None = None) -> int:
        """One batch: returns how many notices were claimed (sent, retried or given up)."""
        now = now or datetime.now(UTC)
        envelopes = await asyncio.to_thread(claim_due, self.store, now, BATCH)
        if not envelopes:
            return 0
        ready, broken = await asyncio.to_thread(compose_all, envelopes, self.settings)
        outcomes = broken + (await self.transport.send(ready) if ready else [])
        handed_over = datetime.now(UTC)
        await asyncio.to_thread(self._record, outcomes, max(now, handed_over))
        _count(envelopes, outcomes, handed_over)
        return len(envelopes)

    def _record(self, outcomes: list[Outcome], now: datetime) -> None:
        mark_sent(self.store, [o.outbox_id for o in outcomes if o.error is None], now)
        for outcome in outcomes:
            if outcome.error is None:
                continue
            gave_up = mark_failed(
                self.store,
                outcome.outbox_id,
                outcome.error,
                permanent=outcome.permanent,
                now=now,
                policy=self.retry,
            )
            log.warning(
                "notice %s %s: %s",
                outcome.outbox_id,
                "failed for good" if gave_up else "will be retried",
                outcome.error,
            )


