"""Delivering the outbox: render, compose, hand over to an SMTP relay or a Maildir.

A pass runs a small pipeline over batches of due notices: while one batch is
on the wire, the next is claimed (leased in the store) in a worker thread and
rendered and composed (in a worker process under a burst, see
gateway/offload.py, else a thread), and the batch before has its outcomes
recorded, so the database and the rendering hide behind network waits.  Messages go
over a few SMTP connections kept for the whole pass (or into the Maildir).
4xx replies, timeouts and dropped connections are retried with backoff and
the same Message-ID; 5xx is permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mailbox
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import aiosmtplib

from config import Config, parse_duration
from gateway import composing, metrics
from gateway.composing import Composed, Outcome, Ready, compose_all
from gateway.composing import MailSettings as MailSettings  # imported from here by the benches
from gateway.composing import compose as compose
from gateway.offload import WorkerProcess
from store.db import Store
from workflow.outbox import Envelope, RetryPolicy, claim_due, mark_failed, mark_sent

log = logging.getLogger("countersign.delivery")
BATCH = 200
# SMTP connections per pass: round trips bound one; with 8, each turn of the loop
# serves several replies at once, which costs the client less per message.
CONNECTIONS = 8
PASS_BATCHES = 20  # at most this many batches a pass; the sweeper calls again while there is work


class Transport(Protocol):
    async def send(self, batch: Sequence[Ready]) -> list[Outcome]: ...

    async def close(self) -> None:
        """The pass is over: let go of connections kept between batches."""


# --- transports ------------------------------------------------------------------------


class MaildirTransport:
    """No relay configured: every message becomes a file in ``{data_dir}/outbox``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, batch: Sequence[Ready]) -> list[Outcome]:
        return await asyncio.to_thread(self._write, batch)

    async def close(self) -> None:
        return None

    def _write(self, batch: Sequence[Ready]) -> list[Outcome]:
        box = mailbox.Maildir(self.path, create=True)
        outcomes = []
        for notice in batch:
            try:
                # Local mail files end lines in LF (CRLF is for the wire): grep,
                # mutt and friends read them as text. Written to tmp/, renamed into new/.
                box.add(notice.data.replace(b"\r\n", b"\n"))
                outcomes.append(Outcome(notice.outbox_id))
            except OSError as error:
                outcomes.append(Outcome(notice.outbox_id, f"cannot write to {self.path}: {error}"))
        return outcomes


class SmtpTransport:
    """An SMTP relay, over a few connections reused for a whole pass."""

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
        self._idle: list[aiosmtplib.SMTP] = []  # open between the batches of a pass

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
        # Every connection takes the next message as soon as it is free: a slow
        # reply on one connection does not leave the others idle at the end.
        queue = iter(batch)
        outcomes: list[Outcome] = []
        errors = await asyncio.gather(
            *(self._send_lane(queue, outcomes) for _ in range(min(CONNECTIONS, len(batch))))
        )
        # Every connection failed to open: what is left waits for the next attempt.
        reason = next((error for error in errors if error), "")
        return outcomes + [Outcome(notice.outbox_id, reason) for notice in queue]

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            await self._quit(client)

    async def _send_lane(self, queue: Iterator[Ready], outcomes: list[Outcome]) -> str | None:
        """Send from `queue` until it is empty; the reason if no connection could be opened."""
        client = self._idle.pop() if self._idle else None
        if client is not None and not client.is_connected:
            client = None  # the relay hung up since the last batch
        try:
            for notice in queue:
                if client is None:
                    try:
                        client = await self._connect()
                    except (aiosmtplib.SMTPException, OSError) as error:
                        outcomes.append(Outcome(notice.outbox_id, self._unreachable(error)))
                        return self._unreachable(error)
                outcome, healthy = await self._send_one(client, notice)
                outcomes.append(outcome)
                if not healthy:
                    client.close()
                    client = None
            if client is not None and client.is_connected:
                self._idle.append(client)  # kept for the next batch of this pass
                client = None
            return None
        finally:
            if client is not None:
                await self._quit(client)

    async def _connect(self) -> aiosmtplib.SMTP:
        client = self._client()
        await client.connect()
        return client

    def _unreachable(self, error: Exception) -> str:
        return f"relay {self.host}:{self.port} unreachable: {error}"

    @staticmethod
    async def _quit(client: aiosmtplib.SMTP) -> None:
        if not client.is_connected:
            return
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()

    async def _send_one(self, client: aiosmtplib.SMTP, notice: Ready) -> tuple[Outcome, bool]:
        """Send one message; the flag says whether the connection can carry the next."""
        outbox_id = notice.outbox_id
        try:
            await self._transaction(client, notice)
            return Outcome(outbox_id), True
        except aiosmtplib.SMTPResponseException as error:  # refused at MAIL, RCPT or DATA
            return self._reply(outbox_id, error.code, error.message), client.is_connected
        except (aiosmtplib.SMTPException, OSError) as error:
            # Dropped connection or timeout: did the relay take it? Unknown: retry.
            return Outcome(outbox_id, f"connection lost: {error}"), False

    async def _transaction(self, client: aiosmtplib.SMTP, notice: Ready) -> None:
        """MAIL, RCPT, DATA: what ``client.sendmail`` does for one recipient.

        Without sendmail's extras for many recipients and its optional SIZE,
        which parse both addresses twice and scan the message once more: a
        third of the client's time per message.
        """
        try:
            await client.mail(self.envelope_sender)
            await client.rcpt(notice.recipient)
            await client.data(notice.data)
        except aiosmtplib.SMTPResponseException:
            # Refused: reset the envelope so the connection can carry the next one.
            # One that cannot reset shows as disconnected, and is dropped.
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.rset()
            raise

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


@dataclass(frozen=True)
class _Batch:
    """Claimed notices, composed: ready to send, or broken for good."""

    now: datetime  # when they were claimed
    envelopes: list[Envelope]
    composed: Composed


class Deliverer:
    def __init__(self, store: Store, config: Config, transport: Transport | None = None) -> None:
        self.store = store
        self.settings = MailSettings.from_config(config)
        self.transport = transport or make_transport(config)
        # Rendering and composing cost more than sending, per notice: under a
        # burst they go to a process of their own, so the loop keeps its core.
        self.composer = WorkerProcess("composing", composing.warm_up)
        self.retry = RetryPolicy(
            first_retry=parse_duration(config.outbound.first_retry),
            give_up_after=parse_duration(config.outbound.give_up_after),
        )
        self.claiming = True  # False once the daemon stops: see stop_claiming

    def stop_claiming(self) -> None:
        """The daemon stops: a pass sends and records what it holds, but claims no more.

        So the pass in hand ends soon and the daemon can wait for it: a batch
        cut off between handing it over and recording it would be sent again
        after its lease, with the same Message-ID.
        """
        self.claiming = False

    async def deliver_due(self, now: datetime | None = None) -> int:
        """One pass over what is due: returns how many notices were claimed.

        Batches flow through three stages at once: claim and compose (a worker
        thread, and process), send (this loop), record (a worker thread). A pass stops at the
        first batch that is not full, after PASS_BATCHES, or once stop_claiming is called.
        """
        prepared: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._prepare_all(now, prepared))
                claimed = await self._send_all(prepared, tasks)
        finally:
            await self.transport.close()
        return claimed

    async def _prepare_all(
        self, now: datetime | None, prepared: asyncio.Queue[_Batch | None]
    ) -> None:
        """Claim and compose batch after batch, one ahead of the one being sent."""
        for _ in range(PASS_BATCHES):
            if not self.claiming:
                break
            claimed_at = now or datetime.now(UTC)
            envelopes = await asyncio.to_thread(claim_due, self.store, claimed_at, BATCH)
            if len(envelopes) == BATCH:
                self.composer.start()  # a burst: used once it is up, a second or so later
            if envelopes:
                composed = await self._compose(envelopes)
                composed.log_broken()
                await prepared.put(_Batch(claimed_at, envelopes, composed))
            if len(envelopes) < BATCH:
                break
        await prepared.put(None)

    async def _compose(self, envelopes: list[Envelope]) -> Composed:
        composed: Composed | None = await self.composer.run(compose_all, envelopes, self.settings)
        if composed is None:  # no process to do it (yet, or any more): a thread does
            composed = await asyncio.to_thread(compose_all, envelopes, self.settings)
        return composed

    def close(self) -> None:
        """The daemon stops: the composing process, if any, goes too."""
        self.composer.close()

    async def _send_all(
        self, prepared: asyncio.Queue[_Batch | None], tasks: asyncio.TaskGroup
    ) -> int:
        claimed = 0
        while (batch := await prepared.get()) is not None:
            claimed += len(batch.envelopes)
            ready = batch.composed.ready
            outcomes = batch.composed.broken + (await self.transport.send(ready) if ready else [])
            # Recorded while the next batch is sent; the TaskGroup waits for it.
            tasks.create_task(self._record_batch(batch, outcomes))
        return claimed

    async def _record_batch(self, batch: _Batch, outcomes: list[Outcome]) -> None:
        handed_over = datetime.now(UTC)
        await asyncio.to_thread(self._record, outcomes, max(batch.now, handed_over))
        _count(batch.envelopes, outcomes, handed_over)

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
                extra={"outbox": outcome.outbox_id, "event": "delivery-attempt-failed"},
            )
