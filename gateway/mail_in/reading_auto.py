"""Is this mail from a machine? Bounces of our own notices first, then any automation.

A machine's mail is recorded and never acted on nor answered, even when it
quotes ACCEPT: an out-of-office reply typically quotes the whole request.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser

from flufl.bounce import scan_message

from countersign.gateway.mail_in.reading_mime import (
    HEADER_CAP,
    address_in,
    decode_part,
    header_text,
    iter_parts,
)
from countersign.rules.readings import Said

BOUNCE_SCAN_BYTES = 256 * 1024  # flufl.bounce's heuristics read every line: feed it a bounded copy
MAX_BOUNCED = 50
MAX_ATTACHED = 20  # attached originals examined for our X-Countersign-* marks

_MACHINE_LOCALS = frozenset({"mailer-daemon", "postmaster"})
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|aw|sv|antw|r[ée]f)\s*(?:\[\d{1,4}\])?\s*[:\uff1a]\s*)+", re.I
)
# Out-of-office subjects (en, fr, de, plus the common vendor spellings), at the start only:
# "Absence" or "Auto:" in the middle of a subject is ordinary language.
_OOO_SUBJECT = re.compile(
    r"^(?:out[ -]of[ -](?:the[ -])?office|automatic reply|auto[ -]?reply|auto[ -]?response"
    r"|auto(?:matic)?\s*:|autosvar|vacation|away from (?:the )?office"
    r"|r[ée]ponse automatique|message d'absence|absence|absent\b|r[ée]pondeur"
    r"|abwesenheitsnotiz|automatische (?:antwort|abwesenheitsnotiz)|abwesend|abwesenheit)",
    re.I,
)
_MARK_LINE = re.compile(
    r"^[> \t]*X-Countersign-(Request|Kind):[ \t]*(\S{1,40})[ \t]*$", re.I | re.M
)
_KIND = re.compile(r"^[a-z0-9-]{1,40}$")


@dataclass(frozen=True)
class Automation:
    """The verdict on a machine's mail: outcome "bounce" or "automated"."""

    outcome: Said
    reason: str
    bounced_recipients: tuple[str, ...] = ()
    bounced_request: int | None = None
    bounced_kind: str | None = None


def classify(msg: Message, raw: bytes, envelope_sender: str | None) -> Automation | None:
    """Bounce or automated, or None for mail a person wrote."""
    machine = _asked_once(lambda: _machine_sender(msg, envelope_sender))
    if _may_be_bounce(msg, envelope_sender, machine):
        failed = _failed_recipients(msg, raw)
        if failed:
            request, kind = _original_marks(msg)
            reason = f"delivery failure for {len(failed)} recipient(s)"
            return Automation(Said.BOUNCE, reason, failed, request, kind)
    reason = _automation_reason(msg, envelope_sender, machine)
    return Automation(Said.AUTOMATED, reason) if reason else None


def _asked_once(question: Callable[[], bool]) -> Callable[[], bool]:
    """The question, answered on first asking and remembered.

    The bounce test and the automation checks both ask whether a mail system
    sent the mail, each only when its earlier tests did not decide; parsing the
    From, Sender and envelope addresses twice was a fifth of the reading.
    """
    answers: list[bool] = []

    def ask() -> bool:
        if not answers:
            answers.append(question())
        return answers[0]

    return ask


def _local_part(address: str) -> str:
    return address_in(address[:HEADER_CAP]).partition("@")[0].strip().lower()


def _null_sender(msg: Message, envelope_sender: str | None) -> bool:
    # Without an SMTP envelope (IMAP), the Return-Path the final MTA wrote stands in for it.
    sender = envelope_sender if envelope_sender is not None else msg.get("Return-Path")
    return sender is not None and str(sender).strip() in ("", "<>")


def _machine_sender(msg: Message, envelope_sender: str | None) -> bool:
    addresses = [header_text(msg, "From"), header_text(msg, "Sender"), envelope_sender or ""]
    return any(_local_part(a) in _MACHINE_LOCALS for a in addresses if a)


def _may_be_bounce(msg: Message, envelope_sender: str | None, machine: Callable[[], bool]) -> bool:
    return (
        _null_sender(msg, envelope_sender)
        or msg.get_content_type() == "multipart/report"
        or machine()
    )


def _failed_recipients(msg: Message, raw: bytes) -> tuple[str, ...]:
    scanned = msg
    if len(raw) > BOUNCE_SCAN_BYTES:
        scanned = email.message_from_bytes(raw[:BOUNCE_SCAN_BYTES])
    try:
        found = scan_message(scanned)
    except Exception:
        # A detector that trips on a mangled report must not make the mail unreadable:
        # it is still a machine's mail and falls through to "automated".
        return ()
    addresses = {a.decode("ascii", "replace").strip().lower() for a in found}
    return tuple(sorted(a for a in addresses if a))[:MAX_BOUNCED]


def automation_reason(msg: Message, envelope_sender: str | None) -> str:
    """Why this mail is a machine's, or "" when nothing says so."""
    return _automation_reason(
        msg, envelope_sender, _asked_once(lambda: _machine_sender(msg, envelope_sender))
    )


def _automation_reason(
    msg: Message, envelope_sender: str | None, machine: Callable[[], bool]
) -> str:
    return (
        _auto_submitted(msg)
        or _precedence(msg)
        or _null_or_machine(msg, envelope_sender, machine)
        or _report(msg)
        or _autoreply_headers(msg)
        or _list_headers(msg)
        or _ooo_subject(msg)
    )


def _auto_submitted(msg: Message) -> str:
    value = header_text(msg, "Auto-Submitted").partition(";")[0].strip().lower()
    if msg.get("Auto-Submitted") is None or value == "no":
        return ""
    return f"Auto-Submitted: {value[:40]}"


def _precedence(msg: Message) -> str:
    value = header_text(msg, "Precedence").strip().lower()
    return f"Precedence: {value}" if value in _BULK_PRECEDENCE else ""


def _null_or_machine(msg: Message, envelope_sender: str | None, machine: Callable[[], bool]) -> str:
    if _null_sender(msg, envelope_sender):
        return "null envelope sender"
    if machine():
        return "sent by a mail system (MAILER-DAEMON/postmaster)"
    return ""


def _report(msg: Message) -> str:
    if msg.get_content_type() == "multipart/report":
        return "delivery status report (multipart/report)"
    return ""


def _autoreply_headers(msg: Message) -> str:
    # X-Autoreply / X-Autorespond are set by vacation responders. X-Auto-Response-Suppress is
    # deliberately absent: Exchange puts it on ordinary mail people write.
    for name in ("X-Autoreply", "X-Autorespond"):
        if msg.get(name) is not None and header_text(msg, name).lower() not in ("no", "false", "0"):
            return f"{name} header"
    return ""


def _list_headers(msg: Message) -> str:
    for name in ("List-Id", "List-Unsubscribe"):
        if msg.get(name) is not None:
            return f"mailing-list mail ({name})"
    return ""


def _ooo_subject(msg: Message) -> str:
    subject = _REPLY_PREFIX.sub("", header_text(msg, "Subject"))
    return "out-of-office subject" if _OOO_SUBJECT.match(subject) else ""


def _original_marks(msg: Message) -> tuple[int | None, str | None]:
    """X-Countersign-Request / -Kind of the original a bounce returns, where it can be found."""
    for headers in _attached_headers(msg):
        request = _request_number(header_text(headers, "X-Countersign-Request"))
        if request is not None:
            return request, _kind(header_text(headers, "X-Countersign-Kind"))
    # Bounces that are not DSNs (old Exim/qmail) quote the original in their text.
    return _marks_in_text(msg)


def _attached_headers(msg: Message) -> list[Message]:
    found: list[Message] = []
    for part in _all_parts(msg):
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                found.append(payload[0])
        elif ctype == "text/rfc822-headers":
            found.append(HeaderParser().parsestr(decode_part(part)))
        if len(found) >= MAX_ATTACHED:
            break
    return found


def _all_parts(msg: Message) -> list[Message]:
    """Every part, this time including attached messages' own parts (bounded)."""
    parts: list[Message] = []
    stack = [msg]
    while stack and len(parts) < 200:
        part = stack.pop()
        parts.append(part)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return parts


def _marks_in_text(msg: Message) -> tuple[int | None, str | None]:
    request: int | None = None
    kind: str | None = None
    for part in iter_parts(msg):
        if part.get_content_maintype() != "text":
            continue
        for match in _MARK_LINE.finditer(decode_part(part)):
            if match.group(1).lower() == "request" and request is None:
                request = _request_number(match.group(2))
            elif kind is None:
                kind = _kind(match.group(2))
        if request is not None:
            return request, kind
    return None, None


def _request_number(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() and value.isascii() and len(value) <= 12 else None


def _kind(value: str) -> str | None:
    value = value.strip().lower()
    return value if _KIND.match(value) else None
