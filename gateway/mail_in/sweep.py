"""Mail in, after it is stored: read each inbox message and hand it to the workflow.

Both doors (SMTP, IMAP) store first and answer after; this is the one
pipeline behind them.  gateway.mail_in.reading reads each message once into the
Reading that the workflow (workflow/inbox_batch.py) acts on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from countersign.config import Config
from countersign.gateway import metrics
from countersign.gateway.mail_in.reading import InboundSettings, read_message
from countersign.gateway.offload import WorkerProcess, log_like_the_daemon
from countersign.rules.readings import Reading
from countersign.rules.replies import REFUSALS, Outcome
from countersign.rules.states import Decision
from countersign.store.db import Store
from countersign.store.health import Health
from countersign.store.leases import give_back
from countersign.store.models import InboxMessage
from countersign.workflow import hooks
from countersign.workflow.inbox_batch import BATCH, Handled, Received, process_due
from countersign.workflow.policy import Policy

# Replies waiting together that make reading worth a process of its own.  Eight
# clients sending at once keep batches at about eight; people answering one by
# one, at one or two.
BURST = 5

# The decisions a reply made (an answer given again changed nothing: not counted).
_DECISIONS: dict[Handled, Decision] = {
    Outcome.ACCEPTED: Decision.ACCEPT,
    Outcome.DECLINED: Decision.DECLINE,
}


def read_inbound(item: Received, settings: InboundSettings) -> Reading:
    """What one stored message says, and whether its sender is vouched for: one parse."""
    return read_message(
        item.raw,
        recipients=item.recipients,
        envelope_sender=item.envelope_from,
        reply_local=settings.reply_local,
        mail_domain=settings.mail_domain,
        trusted_authserv_id=settings.trusted_authserv_id,
    )


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
        on_outcome: Callable[[InboxResult], None] | None = None,
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

    def read(self, item: Received) -> Reading:
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
        outcomes: list[InboxResult] = []
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

    def _counted(self, outcomes: Sequence[InboxResult]) -> None:
        for outcome in outcomes:
            _count(outcome)
            if self.on_outcome is not None:
                self.on_outcome(outcome)

    def close(self) -> None:
        """Stop the mail-in process, if it runs (after the pass in hand)."""
        self.worker.close()


@dataclass(frozen=True)
class InboxResult:
    """What became of one inbox message, for /metrics."""

    inbox_id: int
    channel: str
    outcome: Handled
    committed: float  # time.time() once its batch committed


@dataclass(frozen=True)
class Processed:
    """What a pass in the mail-in process did: each message's outcome, and the topics woken."""

    outcomes: list[InboxResult]
    woken: list[str]


def _note(outcomes: list[InboxResult], item: Received, outcome: Handled) -> None:
    # Called once the batch has committed (or the message was dealt with alone).
    outcomes.append(InboxResult(item.id, item.channel, outcome, time.time()))


PASS = 0.5  # seconds of batches per call into the mail-in process, at most
LINGER = 0.015  # s; after a batch that was not full, so the next one is fuller
_WAKES = ("apply", "outbox", "inbox", "hooks")
_here: dict[str, tuple[MailIn, list[str]]] = {}  # in the mail-in process: its own store


def process_elsewhere(config: Config, now: datetime | None, owner: int | None) -> Processed:
    """In the mail-in process: batch after batch while any is due, for PASS at most.

    Several batches a call: each call is a round trip through the daemon's
    process, whose threads wait for the GIL its event loop holds under load.
    """
    mail_in, woken = _mail_in_here(config)
    outcomes: list[InboxResult] = []
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
        if handled < BATCH:
            time.sleep(LINGER)
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


def _count(done: InboxResult) -> None:
    metrics.count_mail_received(str(done.outcome))
    if done.outcome in _DECISIONS:
        metrics.count_command(str(_DECISIONS[done.outcome]), done.channel)
    elif done.outcome in REFUSALS:
        metrics.count_command("invalid", done.channel)


__all__: Sequence[str] = ["InboundSettings", "MailIn", "read_inbound"]
