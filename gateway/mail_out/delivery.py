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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

import aiosmtplib

from countersign.config import Config, parse_duration
from countersign.gateway import metrics
from countersign.gateway.mail_out import wire as composing
from countersign.gateway.mail_out.maildir import MaildirTransport
from countersign.gateway.mail_out.recording import Answered, Recorder
from countersign.gateway.mail_out.wire import Composed, Outcome, Ready, compose_all
from countersign.gateway.mail_out.wire import (
    MailSettings as MailSettings,  # imported from here by the benches
)
from countersign.gateway.mail_out.wire import compose as compose
from countersign.gateway.offload import WorkerProcess
from countersign.store.db import Store
from countersign.store.leases import give_back
from countersign.store.models import OutboxMessage
from countersign.workflow.outbox import Envelope, RetryPolicy, claim_due

log = logging.getLogger("countersign.delivery")
BATCH = 200
# SMTP connections per pass: round trips bound one; with 8, each turn of the loop
# serves several replies at once, which costs the client less per message.
CONNECTIONS = 8
PASS_BATCHES = 20  # at most this many batches a pass; the sweeper calls again while there is work


OnAnswer = Callable[[Outcome], Awaitable[None]]


class Transport(Protocol):
    async def send(
        self, batch: Sequence[Ready], on_answer: OnAnswer | None = None
    ) -> list[Outcome]:
        """Every notice's outcome; ``on_answer``, if given, awaited on each as it comes."""

    async def close(self) -> None:
        """The pass is over: let go of connections kept between batches."""


# --- transports ------------------------------------------------------------------------


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

    async def send(
        self, batch: Sequence[Ready], on_answer: OnAnswer | None = None
    ) -> list[Outcome]:
        # Every connection takes the next message as soon as it is free: a slow
        # reply on one connection does not leave the others idle at the end.
        queue = iter(batch)
        outcomes: list[Outcome] = []
        lanes = min(CONNECTIONS, len(batch))
        errors = await asyncio.gather(
            *(self._send_lane(queue, outcomes, on_answer) for _ in range(lanes))
        )
        # Every connection failed to open: what is left waits for the next attempt.
        reason = next((error for error in errors if error), "")
        return outcomes + [Outcome(notice.outbox_id, reason) for notice in queue]

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            await self._quit(client)

    async def _send_lane(
        self, queue: Iterator[Ready], outcomes: list[Outcome], on_answer: OnAnswer | None
    ) -> str | None:
        """Send from `queue` until it is empty; the reason if no connection could be opened.

        With ``on_answer``, the next notice waits until the last one's answer is
        recorded: a kill can then send again at most one notice per connection.
        """
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
                if on_answer is not None:
                    await on_answer(outcome)
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


def _count(queued: dict[int, datetime], answered: Sequence[Answered]) -> None:
    for outcome, at in answered:
        metrics.count_mail_sent(outcome.label)
        since = queued.pop(outcome.outbox_id, None)
        if outcome.error is None and since is not None:
            metrics.observe_delivery_latency((at - since).total_seconds())


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
        self.owner: int | None = None  # the worker id its claims name (store/leases.py)
        self._queued: dict[int, datetime] = {}  # claimed notices' queue times, for /metrics
        self.recorder = Recorder(store, self.retry, partial(_count, self._queued))
        self._unclean = False  # a pass raised: what it still held is given back first

    def stop_claiming(self) -> None:
        """The daemon stops: a pass sends and records what it holds, but claims no more.

        So the pass in hand ends soon and the daemon can wait for it: a batch
        cut off between handing it over and recording it would be sent again
        by another daemon, with the same Message-ID.
        """
        self.claiming = False

    async def deliver_due(self, now: datetime | None = None) -> int:
        """One pass over what is due: returns how many notices were claimed.

        Batches flow through three stages at once: claim and compose (a worker
        thread, and process), send (this loop), record (a worker thread). A pass stops at the
        first batch that is not full, after PASS_BATCHES, or once stop_claiming is called.
        """
        if self.recorder.kept or self._unclean:
            await asyncio.to_thread(self._recover)
        prepared: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._prepare_all(now, prepared))
                claimed = await self._send_all(prepared, tasks)
        except BaseException:
            self._unclean = True
            raise
        finally:
            await self.transport.close()
        await asyncio.to_thread(self.recorder.scrub)
        return claimed

    def _recover(self) -> None:
        """After a pass cut short (the store lost): record what was kept, give back the rest."""
        self.recorder.flush_kept()
        if self._unclean:
            give_back(self.store, OutboxMessage, self.owner, keep=self.recorder.kept_ids())
            self._unclean = False

    async def _prepare_all(
        self, now: datetime | None, prepared: asyncio.Queue[_Batch | None]
    ) -> None:
        """Claim and compose batch after batch, one ahead of the one being sent."""
        for _ in range(PASS_BATCHES):
            if not self.claiming:
                break
            claimed_at = now or datetime.now(UTC)
            envelopes = await asyncio.to_thread(
                claim_due, self.store, claimed_at, BATCH, self.owner
            )
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
        if self.recorder.kept:
            try:
                self.recorder.flush_kept()
            except Exception:
                # Their rows stay claimed by this daemon, free once it is gone: sent again.
                log.warning(
                    "%s deliveries could not be recorded (the store is lost);"
                    " they will be sent again",
                    self.recorder.kept,
                )
        with contextlib.suppress(Exception):  # the store lost: the next start's pass scrubs
            self.recorder.scrub()

    async def _send_all(
        self, prepared: asyncio.Queue[_Batch | None], tasks: asyncio.TaskGroup
    ) -> int:
        claimed = 0
        while (batch := await prepared.get()) is not None:
            claimed += len(batch.envelopes)
            self._queued.update((e.outbox_id, e.queued_at) for e in batch.envelopes)
            answered: set[int] = set()
            on_answer = partial(self._answered, answered, batch.now)
            ready = batch.composed.ready
            outcomes = list(batch.composed.broken)
            outcomes += await self.transport.send(ready, on_answer) if ready else []
            # What was not recorded as answered (broken, never sent, a Maildir's batch):
            # recorded while the next batch is sent; the TaskGroup waits for it.
            rest = [o for o in outcomes if o.outbox_id not in answered]
            tasks.create_task(self.recorder.record_all(rest, batch.now))
        return claimed

    async def _answered(self, answered: set[int], now: datetime, outcome: Outcome) -> None:
        answered.add(outcome.outbox_id)
        await self.recorder.record(outcome, now)
