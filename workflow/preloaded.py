"""What a batch of replies will read, loaded up front and handed to the acts that use it.

For a batch of mailed replies: without it every decision costs a lookup of its
code and a load of its request, and each query first flushes what the decision
before it wrote; with it the decisions run from these rows and the batch is
flushed once, at commit.  The requests are locked in id order (PostgreSQL), so
two daemons' batches cannot deadlock on each other's rows.

An explicit value, passed to reply.act and deciding.decide_in: an act that is
not given one looks everything up itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from countersign.rules.readings import Reading, Said
from countersign.store.models import ChangeRequest, Validator
from countersign.workflow.codes import hash_of
from countersign.workflow.lifecycle import load_requests
from countersign.workflow.threads import lookup_threads, thread_of

_COMMANDS = frozenset({Said.ACCEPT, Said.DECLINE})


@dataclass(frozen=True)
class Preloaded:
    """Rows loaded (and locked) in this transaction for a batch's decisions."""

    validators: Mapping[str, Validator | None] = field(default_factory=dict)  # code hash ->
    # Loaded whole and locked: current, and carrying this transaction's own changes.
    requests: Mapping[int, ChangeRequest] = field(default_factory=dict)
    threads: Mapping[str, int] = field(default_factory=dict)  # our notices -> their request

    def validator(self, hashed: str) -> tuple[bool, Validator | None]:
        """(known here, the code's validator); a validator whose code changed since is not."""
        if hashed not in self.validators:
            return False, None
        found = self.validators[hashed]
        return (found is None or found.code_hash == hashed), found

    def thread(self, session: Session, replied_to: Sequence[str]) -> int | None:
        return thread_of(session, replied_to, self.threads)


def preload(session: Session, readings: Sequence[Reading]) -> Preloaded:
    """Load, in four statements, what acting on these readings will read."""
    threads = lookup_threads(session, [r.replied_to for r in readings])
    deciding = [r for r in readings if r.said in _COMMANDS or r.code is not None]
    requests = {t for r in deciding if (t := thread_of(session, r.replied_to, threads)) is not None}
    return _decisions(session, [r.code for r in deciding if r.code is not None], requests, threads)


def _decisions(
    session: Session, codes: Iterable[str], request_ids: Iterable[int], threads: Mapping[str, int]
) -> Preloaded:
    hashes = {h for c in codes if (h := hash_of(c)) is not None}
    found = (
        {
            v.code_hash: v
            for v in session.scalars(select(Validator).where(Validator.code_hash.in_(hashes)))
        }
        if hashes
        else {}
    )
    ids = sorted({v.request_id for v in found.values()} | set(request_ids))
    loaded = {r.id: r for r in load_requests(session, ids, lock=True)}
    return Preloaded({h: found.get(h) for h in hashes}, loaded, threads)
