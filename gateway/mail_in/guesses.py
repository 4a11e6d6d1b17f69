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
    def __init__(self, store: Store, policy: Policy, reply_local: str = "confirm") -> None:
        self.store = store
        self.policy = policy
        self.prefix = reply_local.lower() + "+"

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
        if not await asyncio.to_thread(self._limited, tag, source):
            return None
        # As for a stored guess past the limit (workflow/deciding.py): the operator sees it.
        log.warning(
            "wrong codes from %s past its limit: a recipient refused at RCPT (450)",
            source,
            extra={"event": "locked-out", "door": "smtp"},
        )
        return LIMITED

    def _limited(self, tag: str, source: str) -> bool:
        canonical = normalize_code(tag)
        with self.store.read() as session:
            if canonical is not None:
                found = session.scalar(
                    select(Validator.id).where(Validator.code_hash == hash_code(canonical))
                )
                if found is not None:
                    return False  # a real code: taken, and answered as it deserves
            now = datetime.now(UTC)
            return guess_limits.source_limited(session, source, now, self.policy)
