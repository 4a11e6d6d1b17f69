"""Prometheus metrics: counters the edges bump, gauges read from the store at scrape time.

The counters live in this module, so any edge can call ``count_mail_received``
and friends without knowing about the web server.  The gauges (requests by
state, outbox and inbox depth) are not kept in memory: the store is the only
truth, shared by every daemon, so each scrape asks it, by index only: requests
by state from their tallies (store/tallies.py, kept as requests move), waiting
mail counted (as much as is waiting), never the history.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from countersign.store.db import Store
from countersign.store.models import InboxMessage, OutboxMessage
from countersign.workflow import operations

__all__ = [
    "CONTENT_TYPE_LATEST",
    "count_command",
    "count_hook_delivery",
    "count_mail_received",
    "count_mail_sent",
    "make_registry",
    "observe_delivery_latency",
    "scrape",
]

# registry=None: not in prometheus_client's global registry; make_registry adds them.
MAIL_RECEIVED = Counter(
    "countersign_mail_received",
    "Mail received, by what became of it (e.g. command, ignored, rejected).",
    ["outcome"],
    registry=None,
)
MAIL_SENT = Counter(
    "countersign_mail_sent",
    "Notices handed over (or not), by outcome (e.g. sent, retry, failed).",
    ["outcome"],
    registry=None,
)
COMMANDS = Counter(
    "countersign_commands",
    "Accept/decline answers, by decision (accept, decline, invalid) and channel.",
    ["decision", "channel"],
    registry=None,
)
DELIVERY_LATENCY = Histogram(
    "countersign_delivery_latency_seconds",
    "From a notice being queued to its handover to the relay or the Maildir.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    registry=None,
)
HOOK_DELIVERIES = Counter(
    "countersign_hook_deliveries",
    "Events POSTed to webhook endpoints or the applier, by target and outcome"
    " (delivered, retry, failed, refused).",
    ["target", "outcome"],
    registry=None,
)
_COUNTERS = (MAIL_RECEIVED, MAIL_SENT, COMMANDS, DELIVERY_LATENCY, HOOK_DELIVERIES)
# Every series an alert may name exists at 0 from the start: rate() over a series
# that appears only with its first event misses that event.
RECEIVED_OUTCOMES = (
    *("accepted", "declined", "ambiguous", "no-command", "automated", "bounce", "malformed"),
    *("refused:unknown-code", "refused:locked"),
)
for _outcome in RECEIVED_OUTCOMES:
    MAIL_RECEIVED.labels(outcome=_outcome)
for _outcome in ("sent", "retry", "failed"):
    MAIL_SENT.labels(outcome=_outcome)
for _decision in ("accept", "decline", "invalid"):
    for _channel in ("smtp", "imap", "web", "api"):
        COMMANDS.labels(decision=_decision, channel=_channel)
for _target in ("webhook", "apply"):
    for _outcome in ("delivered", "retry", "failed", "refused"):
        HOOK_DELIVERIES.labels(target=_target, outcome=_outcome)
# The last delivery attempt of this process, for /healthz: (when, sent|retry|failed).
last_delivery: dict[str, object] = {}


def count_hook_delivery(target: str, outcome: str) -> None:
    """``target``: webhook or apply (not the url: it may carry a token)."""
    HOOK_DELIVERIES.labels(target=target, outcome=outcome).inc()


def count_mail_received(outcome: str) -> None:
    MAIL_RECEIVED.labels(outcome=outcome).inc()


def count_mail_sent(outcome: str) -> None:
    MAIL_SENT.labels(outcome=outcome).inc()
    last_delivery.update(at=time.time(), outcome=outcome)


def count_command(decision: str, channel: str) -> None:
    """``decision``: accept, decline, or invalid (the answer changed nothing)."""
    COMMANDS.labels(decision=decision, channel=channel).inc()


def observe_delivery_latency(seconds: float) -> None:
    DELIVERY_LATENCY.observe(seconds)


class StoreCollector(Collector):
    """Gauges computed from the store when scraped."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.store.read() as session:
            outbox = session.scalar(select(func.count()).where(OutboxMessage.status == "pending"))
            inbox = session.scalar(select(func.count()).where(InboxMessage.status == "pending"))
        status = operations.status(self.store)
        requests = GaugeMetricFamily(
            "countersign_requests", "Contact change requests, by state.", labels=["state"]
        )
        # Every state, zeros included: a series that vanishes is hard to alert on.
        for state, count in status["requests"].items():
            requests.add_metric([state], count)
        yield requests
        yield GaugeMetricFamily(
            "countersign_outbox_depth", "Notices waiting to be sent.", value=outbox or 0
        )
        yield GaugeMetricFamily(
            "countersign_inbox_depth", "Received mail waiting to be processed.", value=inbox or 0
        )
        yield from queue_gauges(status)


def queue_gauges(status: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
    """Oldest due item per queue, what is stuck in each, when IMAP last answered."""
    oldest = GaugeMetricFamily(
        "countersign_queue_oldest_due_seconds",
        "Age of the oldest item due in each queue (0 when empty).",
        labels=["queue"],
    )
    for name, queue in status["queues"].items():
        oldest.add_metric([name], queue["oldestDueAgeSeconds"])
    yield oldest
    queues = status["queues"]
    yield GaugeMetricFamily(
        "countersign_inbox_quarantined",
        "Received mail that failed three times (`countersign inbox --failed`).",
        value=queues["inbox"]["quarantined"],
    )
    yield GaugeMetricFamily(
        "countersign_outbox_failed",
        "Notices given up on (`countersign outbox list --failed`).",
        value=queues["outbox"]["failed"],
    )
    yield GaugeMetricFamily(
        "countersign_hooks_pending",
        "Webhook and applier deliveries waiting to be sent (or retried).",
        value=queues["hooks"]["waiting"],
    )
    yield GaugeMetricFamily(
        "countersign_hooks_failed",
        "Deliveries given up (see `countersign hooks list --failed`).",
        value=queues["hooks"]["failed"],
    )
    contact = GaugeMetricFamily(
        "countersign_imap_last_contact_timestamp_seconds",
        "When each IMAP mailbox last answered (Unix time).",
        labels=["mailbox"],
    )
    for cursor in status["imap"]:
        if cursor["lastContact"]:
            moment = datetime.fromisoformat(cursor["lastContact"].replace("Z", "+00:00"))
            contact.add_metric([cursor["mailbox"]], moment.timestamp())
    yield contact


def make_registry(store: Store) -> CollectorRegistry:
    """One app's registry: the shared counters, its store's gauges, the process."""
    registry = CollectorRegistry()
    for collector in _COUNTERS:
        registry.register(collector)
    registry.register(StoreCollector(store))
    ProcessCollector(registry=registry)
    return registry


def scrape(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (blocking: call it from a worker thread)."""
    return generate_latest(registry)
