"""SMTP in: replies arrive here (aiosmtpd, on the daemon's own asyncio loop).

A message is answered 250 only once it is stored in the inbox table; the
reading and acting happen after, from there (gateway/mail_in/sweep.py), so a crash
between the two loses nothing and a slow decision never holds a client.
Storage that fails answers 451 (try again later), never a 500 that would
make the sender give up or show it our internals.

Messages that arrive while a write is under way are stored together in the
next one (group commit, see Intake): each is still committed before its 250.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeAlias

from aiosmtpd.smtp import SMTP, Envelope, Session

from countersign.config import Config
from countersign.gateway.mail_in.guesses import CodeRecipients
from countersign.store.db import Store
from countersign.workflow.guess_limits import source_key
from countersign.workflow.inbox import Arrival, store_many, store_received
from countersign.workflow.policy import Policy
from countersign.workflow.redaction import redact_text

log = logging.getLogger("countersign.smtp")

SESSION_TIMEOUT = 120.0  # seconds a client may stay silent (aiosmtpd's default is 300)
MAX_RECIPIENTS = 20
# Commands per connection: enough for a relay that reuses its connection for
# hundreds of replies, not enough for a client to loop on us forever.
COMMAND_CALL_LIMIT = {"MAIL": 1000, "RCPT": 5000, "DATA": 1000, "RSET": 1000, "*": 20}
# Local parts of our domain that take mail: the reply address (with or without
# +CODE), our notices' envelope sender (bounces come back to it) and postmaster.

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, try again later"
MAX_GROUP = 64  # messages per intake transaction: bounds what one failure retries alone


class Receive(Protocol):
    def __call__(
        self,
        store: Store,
        raw: bytes,
        *,
        channel: str,
        envelope_from: str | None,
        recipients: Sequence[str],
        now: datetime,
    ) -> int | None: ...


@dataclass(frozen=True)
class Mailbox:
    """Which addresses are ours: every address at the mail domain (the contract's rule).

    Replies come to ``confirm+CODE@``, bounces to the ``mail.from`` address, and
    people write to whatever they see; the pipeline reads them all the same way.
    """

    domain: str

    @classmethod
    def from_config(cls, config: Config) -> Mailbox:
        return cls(config.mail.domain.lower())

    def accepts(self, address: str) -> bool:
        local, at, domain = address.rpartition("@")
        return bool(at and local) and domain.lower() == self.domain


ReceiveMany: TypeAlias = Callable[[Store, Sequence[Arrival]], list[int | None]]
Stored: TypeAlias = int | Exception | None  # one arrival's inbox id, duplicate, or failure


class Intake:
    """Group commit: messages that arrive while a write runs are stored together in the next.

    The first message of a quiet moment is written at once (no waiting for
    company); under load, every session waiting on the write in flight joins the
    following one, so one commit serves many 250s.  The writes run in a worker
    thread, one at a time (SQLite has a single writer anyway).
    """

    def __init__(self, store: Store, receive_many: ReceiveMany, receive: Receive | None) -> None:
        self.store = store
        self.receive_many = receive_many
        self.receive = receive  # given: each message stored on its own through it (a test hook)
        self._waiting: list[tuple[Arrival, asyncio.Future[int | None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def store_one(self, arrival: Arrival) -> int | None:
        """Its inbox id once committed, None if it was already stored; raises on failure."""
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((arrival, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        return await future

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    results = await asyncio.to_thread(self._write, [a for a, _ in group])
                except BaseException:  # cancelled (shutting down): nobody is left hanging
                    for _, future in group + self._waiting:
                        _settle(future, RuntimeError("SMTP intake stopped"))
                    self._waiting = []
                    raise
                for (_, future), result in zip(group, results, strict=True):
                    _settle(future, result)
        finally:
            self._writer = None

    def _write(self, arrivals: list[Arrival]) -> list[Stored]:
        if self.receive is None:
            try:
                return list(self.receive_many(self.store, arrivals))
            except Exception as error:
                if self.store.health.failed(error):  # logged once; each alone would fail too
                    return [error] * len(arrivals)
                # One bad message must not cost its neighbours a 451: each alone.
                log.warning("storing %s messages together failed; one by one", len(arrivals))
        return [self._write_alone(a) for a in arrivals]

    def _write_alone(self, arrival: Arrival) -> Stored:
        receive = self.receive or store_received
        try:
            return receive(
                self.store,
                arrival.raw,
                channel=arrival.channel,
                envelope_from=arrival.envelope_from,
                recipients=arrival.recipients,
                now=arrival.now,
            )
        except Exception as error:
            return error


def _settle(future: asyncio.Future[int | None], result: Stored) -> None:
    if future.done():  # its session went away (cancelled); the message is stored all the same
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


class InboxHandler:
    """aiosmtpd hooks: who may be written to, and the store-then-250 rule."""

    def __init__(
        self,
        store: Store,
        mailbox: Mailbox,
        receive: Receive | None = None,
        receive_many: ReceiveMany = store_many,
        codes: CodeRecipients | None = None,
    ) -> None:
        self.store = store
        self.mailbox = mailbox
        self.intake = Intake(store, receive_many, receive)
        self.codes = codes or CodeRecipients(store, Policy())

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.mailbox.accepts(address):
            return "550 5.1.1 No such mailbox here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        try:
            refusal = await self.codes.refusal(address, envelope.rcpt_tos, _source(session))
        except Exception as error:
            # The guess limits live in the store: while it is lost, answer as DATA would
            # (451, logged once by the store's health), not with a dropped connection.
            if not self.store.health.failed(error):
                log.exception("could not check the code of a recipient")
            return TEMPORARY_FAILURE
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrival = Arrival(
            raw=bytes(envelope.original_content or b""),
            channel="smtp",
            envelope_from=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            now=datetime.now(UTC),
            source=_source(session),
        )
        try:
            stored = await self.intake.store_one(arrival)
        except Exception as error:
            # Answered here rather than raised: aiosmtpd would not reset the
            # transaction after an exception, and the client's next MAIL would fail.
            if not self.store.health.failed(error):  # an outage is logged once, there
                log.exception("could not store a message from %s", envelope.mail_from)
            return TEMPORARY_FAILURE
        return "250 2.0.0 OK" if stored is not None else "250 2.0.0 OK (already received)"

    async def handle_exception(self, error: Exception) -> str:
        log.exception("SMTP session failed", exc_info=error)
        return TEMPORARY_FAILURE


@functools.cache
def _smtp_class(max_bytes: int) -> type[SMTP]:
    """aiosmtpd's SMTP with DATA lines allowed up to the message's own limit.

    aiosmtpd refuses a line over 1,001 octets ("500 Line too long"); HTML-only
    clients and some gateways send longer ones, and Postfix takes them, so we
    do too.  The limit sizes the stream reader made in SMTP.__init__, hence a
    class attribute; commands keep their own limits (command_size_limit).
    """
    limit = max(SMTP.line_length_limit, max_bytes + 2)
    return type("LongLinesSMTP", (SMTP,), {"line_length_limit": limit})


def _source(session: Session) -> str:
    """The connecting client, as the guess limits count it."""
    peer = session.peer
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    return source_key(str(host)) if host else "unknown"


class _NoCodes(logging.Filter):
    """aiosmtpd's "mail.log" prints every RCPT TO:<confirm+CODE@...>, and at DEBUG
    every line of every message: the bodies are dropped, the codes replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("DATA readline"):
            return False
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_NO_CODES = _NoCodes()


def make_smtp(handler: InboxHandler, config: Config) -> SMTP:
    logging.getLogger("mail.log").addFilter(_NO_CODES)  # once: the same instance
    return _smtp_class(config.inbound.max_bytes)(
        handler,
        # Named, so aiosmtpd does not ask DNS for our name on every connection.
        hostname=config.mail.domain,
        ident="Countersign ESMTP",
        data_size_limit=config.inbound.max_bytes,
        enable_SMTPUTF8=True,
        decode_data=False,
        timeout=SESSION_TIMEOUT,
        command_call_limit=COMMAND_CALL_LIMIT,
    )


async def start_smtp(
    store: Store,
    config: Config,
    *,
    host: str | None = None,
    port: int | None = None,
    receive: Receive | None = None,
    receive_many: ReceiveMany = store_many,
) -> asyncio.Server:
    """Listen on ``inbound.smtp_host:smtp_port`` on the running loop (no thread of its own).

    ``receive_many`` stores a group of messages in one transaction; ``receive``,
    when given, stores each message alone instead (tests use it to inject failures).
    """
    codes = CodeRecipients(store, Policy.from_config(config), config.mail.reply_local)
    handler = InboxHandler(store, Mailbox.from_config(config), receive, receive_many, codes)

    def factory() -> SMTP:
        return make_smtp(handler, config)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory,
        host=host if host is not None else config.inbound.smtp_host,
        port=port if port is not None else config.inbound.smtp_port,
    )
    log.info("SMTP in listening on %s", ", ".join(_names(server)))
    return server


def _names(server: asyncio.Server) -> list[str]:
    return [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets]
