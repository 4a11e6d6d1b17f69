"""Read one inbound message: what it says, never what to do about it.

Pure: bytes in, a Reading out; no database, no network, no clock. It never
raises, whatever the bytes, and its work is bounded (see the caps in
reading_mime, reading_quotes and reading_commands), because it runs on mail
from anyone.

Order of the questions, as the contract asks:
1. Is it a bounce of one of our notices (flufl.bounce on DSNs and null-sender
   mail)? -> "bounce".
2. Is it any other machine's mail (Auto-Submitted, Precedence, null sender,
   reports, mailing lists, out-of-office subjects)? -> "automated".
   Neither is ever a command, even when it quotes ACCEPT.
3. Otherwise read the Subject and the first new lines for a command.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses, parseaddr

from countersign.gateway.comments import comment_of
from countersign.gateway.reading_auto import classify
from countersign.gateway.reading_commands import Verdict, judge
from countersign.gateway.reading_mime import (
    HEADER_CAP,
    Unreadable,
    address_in,
    body_text,
    header_text,
    parse,
)
from countersign.gateway.reading_quotes import library_reply, new_lines
from countersign.rules.names import unseen
from countersign.workflow.codes import normalize_code, stand_in_hash

OUTCOMES = ("accept", "decline", "ambiguous", "no-command", "automated", "bounce", "malformed")
MAX_MESSAGE_ID = 250  # longer is not a real Message-ID; fall back to the content hash
MAX_ADDRESSES = 50

_MESSAGE_ID = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
_BRACKETED_ID = re.compile(r"<([^<>\s]{1,250})>")  # "<id> (comment)" happens


@dataclass(frozen=True)
class Reading:
    """What one inbound message says."""

    message_id: str  # Message-ID without <>, or "sha256:<hex of raw bytes>" when absent
    sender: str | None  # From address, lowercased, None if unparseable
    outcome: str  # one of OUTCOMES
    code: str | None  # from the command line, else from the +CODE of the address
    reason: str  # short human text for logs and audit
    bounced_recipients: tuple[str, ...] = ()
    bounced_request: int | None = None
    bounced_kind: str | None = None
    comment: str | None = None  # the rest of the command line (new text only), no code


def read_message(
    raw: bytes,
    *,
    recipients: Sequence[str],
    envelope_sender: str | None,
    reply_local: str = "confirm",
    mail_domain: str = "countersign.localhost",
) -> Reading:
    """Read a raw message. `recipients` are the SMTP RCPT TOs (empty when read over IMAP)."""
    return read_parsed(
        raw,
        recipients=recipients,
        envelope_sender=envelope_sender,
        reply_local=reply_local,
        mail_domain=mail_domain,
    )[0]


def read_parsed(
    raw: bytes,
    *,
    recipients: Sequence[str],
    envelope_sender: str | None,
    reply_local: str = "confirm",
    mail_domain: str = "countersign.localhost",
) -> tuple[Reading, Message | None]:
    """read_message, plus the message it parsed (None when it was not read): its headers
    serve the caller's own checks without a second parse."""
    try:
        data = bytes(raw)
        msg = parse(data)
        return _read(msg, data, recipients, envelope_sender, reply_local, mail_domain), msg
    except Unreadable as exc:
        return _malformed(raw, str(exc)), None
    except Exception as exc:
        # The contract: never raise on any input. Whatever slipped past the checks
        # (a library bug, a pathological MIME tree) is reported, not propagated.
        return _malformed(raw, f"unreadable message ({type(exc).__name__})"), None


def _read(
    msg: Message,
    raw: bytes,
    recipients: Sequence[str],
    envelope_sender: str | None,
    reply_local: str,
    mail_domain: str,
) -> Reading:
    message_id = _message_id(msg, raw)
    forged = _from_problem(msg)
    if forged is not None:
        # Whose mail is it? Reading the first From would let a forger pick: nobody's.
        return Reading(message_id, None, "malformed", None, forged)
    sender = _sender(msg)
    address_code = _address_code(msg, recipients, reply_local, mail_domain)
    automation = classify(msg, raw, envelope_sender)
    if automation is not None:
        return Reading(
            message_id,
            sender,
            automation.outcome,
            address_code,
            automation.reason,
            automation.bounced_recipients,
            automation.bounced_request,
            automation.bounced_kind,
        )
    verdict = _read_commands(msg)
    code = verdict.code or address_code
    comment = comment_of(verdict.rest) if verdict.outcome in ("accept", "decline") else None
    return Reading(message_id, sender, verdict.outcome, code, verdict.reason, comment=comment)


def _read_commands(msg: Message) -> Verdict:
    subject = header_text(msg, "Subject")
    text = body_text(msg)
    verdict = judge(subject, new_lines(text))
    # mailparser_reply is a second opinion only: the structural cut decides, and a
    # disagreement is written into the reason so the audit trail shows it.
    library = library_reply(text)
    if library is not None:
        second = judge(subject, new_lines(library))
        if second.outcome != verdict.outcome:
            note = f"; mailparser_reply's cut would give {second.outcome}"
            return Verdict(verdict.outcome, verdict.code, verdict.reason + note, verdict.rest)
    return verdict


def _malformed(raw: object, reason: str) -> Reading:
    return Reading(_raw_id(raw), None, "malformed", None, reason)


def _raw_id(raw: object) -> str:
    data = raw if isinstance(raw, bytes | bytearray | memoryview) else repr(raw).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _message_id(msg: Message, raw: bytes) -> str:
    """The Message-ID without <>; a missing or unusable one falls back to the content hash."""
    value = header_text(msg, "Message-ID")
    bracketed = _BRACKETED_ID.search(value)
    value = bracketed.group(1) if bracketed else value.strip()
    if value and len(value) <= MAX_MESSAGE_ID and _MESSAGE_ID.match(value):
        return value
    return _raw_id(raw)


def _from_problem(msg: Message) -> str | None:
    """Why the From cannot name one sender, or None when it can (or is absent)."""
    values = msg.get_all("From") or []
    if len(values) > 1:
        return f"{len(values)} From headers: not read as anyone's"
    if values:
        mailboxes = [a for _, a in getaddresses([header_text(msg, "From")]) if "@" in a]
        if len(mailboxes) > 1:
            return f"a From of {len(mailboxes)} mailboxes: not read as anyone's"
    return None


def _sender(msg: Message) -> str | None:
    address = address_in(header_text(msg, "From")).strip().lower()
    local, at, domain = address.rpartition("@")
    if unseen(address):  # a NUL or an ESC in a From is nobody's address (PostgreSQL refuses NUL)
        return None
    return address if at and local and domain and " " not in address else None


def _address_code(
    msg: Message, recipients: Sequence[str], reply_local: str, mail_domain: str
) -> str | None:
    """The code in `{reply_local}+CODE@{mail_domain}`: envelope first, then To/Delivered-To."""
    for address in _candidate_addresses(msg, recipients):
        local, _, domain = address.rpartition("@")
        base, plus, tag = local.partition("+")
        if plus and base.lower() == reply_local.lower() and domain.lower() == mail_domain.lower():
            code = tag if stand_in_hash(tag) is not None else normalize_code(tag)
            if code is not None:
                return code
    return None


def _candidate_addresses(msg: Message, recipients: Sequence[str]) -> list[str]:
    envelope = [parseaddr(str(r)[:HEADER_CAP])[1] for r in list(recipients)[:MAX_ADDRESSES]]
    headers: list[str] = []
    for name in ("To", "Delivered-To"):
        values = [str(v)[:HEADER_CAP] for v in (msg.get_all(name) or [])[:MAX_ADDRESSES]]
        headers.extend(addr for _, addr in getaddresses(values)[:MAX_ADDRESSES])
    # The envelope is what the sending MTA used, so it is asked first; the headers
    # stand in when there is no envelope (IMAP) or it carries no code.
    return [a.strip() for a in envelope + headers if a.strip()]
