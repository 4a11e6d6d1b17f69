"""SMTP's part of the guess limits, decided at RCPT: before a guesser's message is even sent.

A real reply has one ``confirm+CODE@`` recipient; a message naming more than
MAX_CODE_RECIPIENTS is refused the rest (452).  A client address that has used
up its wrong codes (workflow/guess_limits.py) is refused a recipient whose code
is not a real one (450, try later); a real code is never refused, whoever else
shares that address (a large provider's relays carry many people's mail).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select

from countersign.store.db import Store
from countersign.store.models import Validator
from countersign.workflow import guess_limits
from countersign.workflow.codes import hash_code, normalize_code
from countersign.workflow.policy import Policy

log = logging.getLogger("countersign.smtp")
MAX_CODE_RECIPIENTS = 3
TOO_MANY = "452 4.5.3 Too many confirmation addresses in one message"
LIMITED = "450 4.7.1 Too many invalid codes from your address; try again later"


class CodeRecipients:
    """The RCPT check; the recipients waiting together are looked up in one read.

    Each lookup was a thread hop and a read transaction of its own, for every
    reply: under load, the recipients that came in while one read ran share
    the next (as SMTP intake's group commit does), with the same answer each.
    """

    def __init__(self, store: Store, policy: Policy, reply_local: str = "confirm") -> None:
        self.store = store
        self.policy = policy
        self.prefix = reply_local.lower() + "+"
        self._waiting: list[tuple[str, str, asyncio.Future[bool]]] = []
        self._reader: asyncio.Task[None] | None = None

    def tag(self, address: str) -> str | None:
        """The +TAG of a reply address, or None for any other address."""
        local = address.rpartition("@")[0]
        return local[len(self.prefix) :] if local.lower().startswith(self.prefix) else None

    async def refusal(self, address: str, accepted: Sequence[str], source: str) -> str | None:
        """The answer refusing this recipient, or None to take it."""
        tag = self.tag(address)
        if tag is None:
            return None
        if sum(1 for r in accepted if self.tag(r) is not None) >= MAX_CODE_RECIPIENTS:
            return TOO_MANY
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((tag, source, future))
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_all())
        if not await future:
            return None
        # As for a stored guess past the limit (workflow/deciding.py): the operator sees it.
        log.warning(
            "wrong codes from %s past its limit: a recipient refused at RCPT (450)",
            source,
            extra={"event": "locked-out", "door": "smtp"},
        )
        return LIMITED

    async def _read_all(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    limited = await asyncio.to_thread(self._limited, [(t, s) for t, s, _ in group])
                except Exception as error:  # each recipient of the group gets the failure
                    _settle_all(group, error)
                    continue
                except BaseException:  # cancelled (shutting down): nobody is left hanging
                    _settle_all(group + self._waiting, RuntimeError("SMTP intake stopped"))
                    self._waiting = []
                    raise
                for (_, _, future), answer in zip(group, limited, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._reader = None

    def _limited(self, asked: Sequence[tuple[str, str]]) -> list[bool]:
        """For each (tag, source): whether to refuse it; one read transaction for all."""
        hashes = {tag: hash_code(c) for tag, _ in asked if (c := normalize_code(tag)) is not None}
        now = datetime.now(UTC)
        with self.store.read() as session:
            real = set(
                session.scalars(
                    select(Validator.code_hash).where(Validator.code_hash.in_(set(hashes.values())))
                )
                if hashes
                else ()
            )
            sources: dict[str, bool] = {}
            answers = []
            for tag, source in asked:
                if hashes.get(tag) in real:
                    answers.append(False)  # a real code: taken, and answered as it deserves
                    continue
                if source not in sources:
                    sources[source] = guess_limits.source_limited(session, source, now, self.policy)
                answers.append(sources[source])
            return answers


MAX_GROUP = 64  # recipients a read looks up at most


def _settle_all(group: Sequence[tuple[str, str, asyncio.Future[bool]]], error: Exception) -> None:
    for _, _, future in group:
        if not future.done():
            future.set_exception(error)
