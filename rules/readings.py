"""What one inbound message says: the value the mail-in door reads once and every
later step (the reply policy, the acts, the audit trail, /metrics) uses.

Pure data: gateway/mail_in/reading.py fills it from the bytes, rules/replies.py judges it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Said(StrEnum):
    """What the reader found in a message; only ACCEPT and DECLINE are commands."""

    ACCEPT = "accept"
    DECLINE = "decline"
    AMBIGUOUS = "ambiguous"  # both commands
    NO_COMMAND = "no-command"
    AUTOMATED = "automated"  # a machine's mail: never a command, even when it quotes one
    BOUNCE = "bounce"  # a delivery failure of one of our notices
    MALFORMED = "malformed"  # unreadable, or a From that names no one sender


@dataclass(frozen=True)
class Reading:
    """One inbound message, read."""

    message_id: str  # Message-ID without <>, or "sha256:<hex of raw bytes>" (see message_key)
    sender: str | None  # the From address, lowercased; None when it names nobody
    said: Said
    code: str | None  # from the command line, else from the +CODE of the address
    reason: str  # short human text for logs and audit: why it reads as it does
    bounced_recipients: tuple[str, ...] = ()
    bounced_request: int | None = None
    bounced_kind: str | None = None
    # False when inbound.trusted_authserv_id is set and that server did not say dmarc=pass.
    authenticated: bool = True
    replied_to: tuple[str, ...] = ()  # Message-IDs (as <id>) of our own notices it answers
    comment: str | None = None  # the rest of the command line (new text only), never a code
