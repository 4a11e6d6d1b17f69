"""Each delivery recorded as the relay answers it, and kept in memory if the store is lost.

A connection does not send its next notice before the answer to the last one
is committed, so a daemon killed at any instant can send again only the
notices then between DATA and the relay's answer, one per connection.  The
answers that come in while a commit runs share the next one (group commit, as
SMTP intake does), so recording costs a commit per turn of the connections,
not per notice.

When the store cannot be reached, the outcomes are kept here: the rows stay
claimed by this live daemon (nobody sends them again) and are recorded when
the store is back, before anything new is claimed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from countersign.gateway.mail_out.wire import Outcome
from countersign.store.db import Store
from countersign.workflow.outbox import RetryPolicy, mark_failed, mark_sent

log = logging.getLogger("countersign.delivery")
Answered = tuple[Outcome, datetime]  # an outcome and when the relay gave it


class Recorder:
    def __init__(
        self,
        store: Store,
        retry: RetryPolicy,
        on_recorded: Callable[[Sequence[Answered]], None] = lambda _done: None,
    ) -> None:
        self.store = store
        self.retry = retry
        self.on_recorded = on_recorded  # /metrics, once committed
        self._waiting: list[tuple[Answered, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._kept: list[Answered] = []  # the store was lost: recorded when it is back
        self._lock = threading.Lock()
        # Codes cleared since the last store.scrub(): the write-ahead log still holds
        # them until then; scrub() once a pass, not a checkpoint per group recorded.
        self.unscrubbed = False

    @property
    def kept(self) -> int:
        return len(self._kept)

    def kept_ids(self) -> set[int]:
        with self._lock:
            return {outcome.outbox_id for outcome, _ in self._kept}

    async def record(self, outcome: Outcome, not_before: datetime | None = None) -> None:
        """Returns once ``outcome`` is committed, or kept in memory because the store is lost.

        ``not_before``: the pass's clock when it was given one (tests run ahead of time).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        at = datetime.now(UTC)
        self._waiting.append(((outcome, max(at, not_before or at)), future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_all())
        await asyncio.shield(future)

    async def record_all(self, outcomes: Sequence[Outcome], not_before: datetime) -> None:
        """A batch answered at once (a Maildir's, notices that could not be composed)."""
        if outcomes:
            await asyncio.gather(*(self.record(outcome, not_before) for outcome in outcomes))

    async def _write_all(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                answered = [item for item, _ in group]
                try:
                    await asyncio.to_thread(self._write_or_keep, answered)
                finally:
                    for _, future in group:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._writer = None

    def _write_or_keep(self, answered: list[Answered]) -> None:
        try:
            self.write(answered)
        except Exception as error:
            if not self.store.health.failed(error):
                log.exception("recording %s deliveries failed; kept to record later", len(answered))
            with self._lock:
                self._kept.extend(answered)

    def scrub(self) -> None:
        """Empty the write-ahead log of the codes recorded as sent (SQLite; see store.scrub)."""
        if self.unscrubbed:
            self.unscrubbed = False
            try:
                self.store.scrub()
            except BaseException:
                self.unscrubbed = True  # the next pass tries again
                raise

    def flush_kept(self) -> None:
        """Before a pass claims anything: what was kept goes in first (raises if still lost)."""
        with self._lock:
            kept, self._kept = self._kept, []
        if not kept:
            return
        try:
            self.write(kept)
        except BaseException:
            with self._lock:
                self._kept[:0] = kept
            raise
        log.info("recorded %s deliveries kept while the store was lost", len(kept))

    def write(self, answered: Sequence[Answered]) -> None:
        sent = [(o, at) for o, at in answered if o.error is None]
        if sent:
            ids, last = [o.outbox_id for o, _ in sent], max(at for _, at in sent)
            mark_sent(self.store, ids, last, scrub=False)
            self.unscrubbed = True
        failed = [(o, at) for o, at in answered if o.error is not None]
        for outcome, at in failed:
            self._failed(outcome, at)
        self.on_recorded(answered)

    def _failed(self, outcome: Outcome, at: datetime) -> None:
        assert outcome.error is not None
        gave_up = mark_failed(
            self.store,
            outcome.outbox_id,
            outcome.error,
            permanent=outcome.permanent,
            now=at,
            policy=self.retry,
        )
        log.warning(
            "notice %s %s: %s",
            outcome.outbox_id,
            "failed for good" if gave_up else "will be retried",
            outcome.error,
            extra={"outbox": outcome.outbox_id, "event": "delivery-attempt-failed"},
        )
