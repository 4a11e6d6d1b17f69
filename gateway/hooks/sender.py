"""Sending what workflow/hooks.py queued: signed POSTs to the endpoints and the applier.

A sweep on the loop: claims the due deliveries (the head of each request's
chain), POSTs them side by side with httpx, then records each answer.  A
decision never waits for this: it only wrote the row.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from countersign.config import Config, parse_duration
from countersign.gateway import metrics
from countersign.gateway.hooks.signing import sign
from countersign.store.db import Store
from countersign.store.leases import give_back
from countersign.store.models import HookDelivery
from countersign.workflow import applier, hook_queue
from countersign.workflow.hook_queue import Claimed, hook_policy
from countersign.workflow.hooks import APPLY_TARGET
from countersign.workflow.policy import Policy

log = logging.getLogger("countersign.hooks")
USER_AGENT = "Countersign-Hooks/1"


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (refused connection, timeout)
    error: str | None  # why it did not pass, for the operator and `request show`
    message: str | None = None  # the applier's {"message": ...} on a 409 or 422


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def headers(secret: str, event_id: str, event_type: str, raw: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Countersign-Event-Id": event_id,
        "Countersign-Event-Type": event_type,
        "Countersign-Signature": sign(secret, raw, int(time.time())),
    }


async def post(client: httpx.AsyncClient, url: str, secret: str, body: dict[str, Any]) -> Answer:
    """One signed POST; never raises for what the receiver (or the network) does."""
    raw = encode(body)
    try:
        response = await client.post(
            url, content=raw, headers=headers(secret, body["id"], body["type"], raw)
        )
    except httpx.TimeoutException:
        return Answer(None, "no answer in time")
    except httpx.HTTPError as error:
        return Answer(None, f"cannot reach the receiver: {type(error).__name__}")
    if 200 <= response.status_code < 300:
        return Answer(response.status_code, None)
    return Answer(response.status_code, f"HTTP {response.status_code}", _message(response))


def _message(response: httpx.Response) -> str | None:
    try:
        document = response.json()
    except ValueError:
        return None
    message = document.get("message") if isinstance(document, dict) else None
    return str(message)[:500] if message else None


class HookSender:
    """The `hooks` sweep: one pass sends every due head of chain, concurrently."""

    def __init__(self, store: Store, config: Config, batch: int = 50) -> None:
        self.store = store
        self.config = config
        self.policy = Policy.from_config(config)
        self.batch = batch
        self.owner: int | None = None  # the daemon's worker id, set once registered
        self._secrets = {e.url: e.secret for e in config.hooks.endpoints}
        self._unclean = False  # a pass raised: what it still held is given back first
        hooks, apply = config.hooks, config.apply
        self._retry = hook_policy(
            parse_duration(hooks.first_retry), parse_duration(hooks.give_up_after)
        )
        self._apply_retry = hook_policy(
            parse_duration(apply.first_retry), parse_duration(apply.give_up_after)
        )
        self._timeouts = {
            "webhook": parse_duration(hooks.timeout).total_seconds(),
            "apply": parse_duration(apply.timeout).total_seconds(),
        }

    async def deliver_due(self) -> int:
        if self._unclean:
            await asyncio.to_thread(give_back, self.store, HookDelivery, self.owner, set())
            self._unclean = False
        try:
            claimed = await asyncio.to_thread(
                hook_queue.claim_due, self.store, datetime.now(UTC), self.batch, self.owner
            )
            if claimed:
                await asyncio.gather(*(self._deliver(item) for item in claimed))
            return len(claimed)
        except BaseException:
            self._unclean = True
            raise

    async def _deliver(self, item: Claimed) -> None:
        kind = "apply" if item.target == APPLY_TARGET else "webhook"
        url = self.config.apply.url if kind == "apply" else item.target
        secret = self.config.apply.secret if kind == "apply" else self._secrets.get(url)
        if not url or secret is None:
            answer = Answer(None, "no such target in the configuration any more")
        else:
            async with httpx.AsyncClient(timeout=self._timeouts[kind]) as client:
                answer = await post(client, url, secret, item.body)
        await asyncio.to_thread(self._record, item, kind, answer)

    def _record(self, item: Claimed, kind: str, answer: Answer) -> None:
        now = datetime.now(UTC)
        if kind == "apply":
            outcome = self._record_apply(item, answer, now)
        elif answer.error is None:
            hook_queue.mark_delivered(self.store, item.id, now)
            outcome = "delivered"
        else:
            gave_up = hook_queue.mark_failed(self.store, item.id, answer.error, now, self._retry)
            outcome = "failed" if gave_up else "retry"
        metrics.count_hook_delivery(kind, outcome)
        if outcome in ("retry", "failed"):
            # The url, not the body: the body names accounts; no secret is in either.
            log.warning(
                "%s %s to %s: %s (%s)",
                kind,
                item.event_id,
                _where(item, kind, self.config),
                answer.error,
                outcome,
            )

    def _record_apply(self, item: Claimed, answer: Answer, now: datetime) -> str:
        if answer.error is None:
            applier.applied(self.store, item.id, now, self.policy)
            return "delivered"
        if answer.status in (409, 422):
            reason = answer.message or f"the system of record refused it (HTTP {answer.status})"
            applier.refused(self.store, item.id, reason, now, self.policy)
            return "refused"
        applier.unanswered(self.store, item.id, answer.error, now, self.policy, self._apply_retry)
        return "retry"


def _where(item: Claimed, kind: str, config: Config) -> str:
    url = config.apply.url if kind == "apply" else item.target
    return httpx.URL(url).copy_with(query=None, userinfo=b"").__str__() if url else "(none)"
