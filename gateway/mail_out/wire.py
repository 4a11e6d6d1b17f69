"""A claimed notice made into the bytes that go on the wire: rendered, composed, flattened.

Pure work on plain data (no store, no network), so it runs in the composing
process (gateway/offload.py) as well as in a thread.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parseaddr

from countersign.config import Config
from countersign.gateway.look import BUILT_IN, Look, look_of
from countersign.gateway.mail_out.message import as_bytes, compose_notice
from countersign.gateway.mail_out.render import render_notice, warm_templates
from countersign.rules.states import CODE_NOTICES, NoticeKind
from countersign.workflow.outbox import Envelope

log = logging.getLogger("countersign.delivery")


@dataclass(frozen=True)
class Ready:
    """A composed notice, flattened to the bytes that go on the wire."""

    outbox_id: int
    recipient: str
    data: bytes


@dataclass(frozen=True)
class Outcome:
    outbox_id: int
    error: str | None = None  # None: handed over
    permanent: bool = False

    @property
    def label(self) -> str:
        """The metrics label: sent, retry or failed."""
        if self.error is None:
            return "sent"
        return "failed" if self.permanent else "retry"


@dataclass(frozen=True)
class MailSettings:
    domain: str
    from_header: str
    reply_local: str
    public_url: str
    look: Look = BUILT_IN  # templates.dir and the brand

    @classmethod
    def from_config(cls, config: Config) -> MailSettings:
        return cls(
            domain=config.mail.domain,
            from_header=config.mail_from,
            reply_local=config.mail.reply_local,
            public_url=config.mail.public_url.rstrip("/"),
            look=look_of(config),
        )

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.from_header)[1]


def compose(envelope: Envelope, settings: MailSettings) -> Message:
    """The notice as a message: rendered in the recipient's language, threaded."""
    code = envelope.code if envelope.kind in CODE_NOTICES else None
    request_id = envelope.request["id"] if envelope.request else 0
    reply_address = f"{settings.reply_local}+{code}@{settings.domain}" if code else None
    link = f"{settings.public_url}/confirm/{request_id}?token={code}" if code else None
    if envelope.kind == NoticeKind.SIGN_IN and envelope.code:
        # Its token is no validation code: no reply address, a link to the account pages.
        link = f"{settings.public_url}/account/sign-in/{envelope.code}"
    context = {
        "request": envelope.request,
        "recipient": envelope.recipient,
        "code": code,
        "link": link,
        "reply_address": reply_address,
        "reason": envelope.context.get("reason"),
        "reason_code": envelope.context.get("reason_code"),
        "valid_minutes": envelope.context.get("valid_minutes"),
        "public_url": settings.public_url,
    }
    notice = render_notice(envelope.kind, envelope.language, context, settings.look)
    root = envelope.thread_root if envelope.thread_root != envelope.message_id else None
    return compose_notice(
        notice,
        kind=envelope.kind,
        request_id=request_id,
        to_address=envelope.to_address,
        from_header=settings.from_header,
        message_id=envelope.message_id,
        reply_to=reply_address,
        thread_root=root,
    )


@dataclass(frozen=True)
class Composed:
    """A batch composed: ready to send, or broken for good (with why, for the log)."""

    ready: list[Ready] = field(default_factory=list)
    broken: list[Outcome] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)  # one per broken notice

    def log_broken(self) -> None:
        # Called by the daemon's process: the composing process has no log configured.
        for outcome, trace in zip(self.broken, self.tracebacks, strict=True):
            log.error("cannot compose notice %s\n%s", outcome.outbox_id, trace.rstrip())


def compose_all(envelopes: Sequence[Envelope], settings: MailSettings) -> Composed:
    """Compose every envelope; one that cannot be composed fails alone, for good."""
    composed = Composed()
    for envelope in envelopes:
        try:
            # Flattened here, off the loop: on the loop it would stall every connection.
            data = as_bytes(compose(envelope, settings))
            composed.ready.append(Ready(envelope.outbox_id, str(envelope.to_address), data))
        except Exception as error:  # a bad address or template must not stop the others
            outcome = Outcome(envelope.outbox_id, f"cannot compose: {error}", permanent=True)
            composed.broken.append(outcome)
            composed.tracebacks.append(traceback.format_exc())
    return composed


def warm_up() -> None:
    """In the composing process, before its first batch: this module and the templates."""
    warm_templates()
