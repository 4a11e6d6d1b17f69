"""Prometheus metrics: counters the edges bump, gauges read from the store at scrape time.

The counters live in this module, so any edge can call ``count_mail_received``
and friends without knowing about the web server.  The gauges (requests by
state, outbox and inbox depth) are not kept in memory: the store is the only
truth, shared by every daemon, so each scrape asks it with one grouped query
per gauge.
"""

from __future__ import annotations

from collections.abc import Iterator

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

from rules.states import State
from store.db import Store
from store.models import ChangeRequest, HookDelivery, InboxMessage, OutboxMessage

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


def count_hook_delivery(target: str, outcome: str) -> None:
    """``target``: webhook or apply (not the url: it may carry a token)."""
    HOOK_DELIVERIES.labels(target=target, outcome=outcome).inc()


def count_mail_received(outcome: str) -> None:
    MAIL_RECEIVED.labels(outcome=outcome).inc()


def count_mail_sent(outcome: str) -> None:
    MAIL_SENT.labels(outcome=outcome).inc()


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
            rows = session.execute(
                select(ChangeRequest.state, func.count()).group_by(ChangeRequest.state)
            ).all()
            by_state = {str(state): int(count) for state, count in rows}
            outbox = session.scalar(select(func.count()).where(OutboxMessage.status == "pending"))
            inbox = session.scalar(select(func.count()).where(InboxMessage.status == "pending"))
            hooks = dict(
                session.execute(
                    select(HookDelivery.status, func.count())
                    .where(HookDelivery.status.in_(("pending", "failed")))
                    .group_by(HookDelivery.status)
                ).all()
            )
        requests = GaugeMetricFamily(
            "countersign_requests", "Contact change requests, by state.", labels=["state"]
        )
        # Every state, zeros included: a series that vanishes is hard to alert on.
        for state in State:
            requests.add_metric([str(state)], by_state.get(str(state), 0))
        yield requests
        yield GaugeMetricFamily(
            "countersign_outbox_depth", "Notices waiting to be sent.", value=outbox or 0
        )
        yield GaugeMetricFamily(
            "countersign_inbox_depth", "Received mail waiting to be processed.", value=inbox or 0
        )
        yield GaugeMetricFamily(
            "countersign_hooks_pending",
            "Webhook and applier deliveries waiting to be sent (or retried).",
            value=hooks.get("pending", 0),
        )
        yield GaugeMetricFamily(
            "countersign_hooks_failed",
            "Deliveries given up (see `countersign hooks list --failed`).",
            value=hooks.get("failed", 0),
        )


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
