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

The one Reading (rules/readings.py) also carries what the headers say whatever
the body does: the Message-ID (workflow/message_ids.py, the rule storing uses),
the From, the trusted server's DMARC verdict and the notices of ours replied to
(gateway/mail_in/reading_headers.py). Every later step uses it; nothing parses again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses, parseaddr

from countersign.config import Config
from countersign.gateway.comments import comment_of
from countersign.gateway.mail_in.reading_auto import classify
from countersign.gateway.mail_in.reading_commands import Verdict, judge
from countersign.gateway.mail_in.reading_headers import dmarc_passed, headers_of, our_references
from countersign.gateway.mail_in.reading_mime import (
    HEADER_CAP,
    Unreadable,
    address_in,
    body_text,
    header_text,
    parse,
)
from countersign.gateway.mail_in.reading_quotes import library_reply, new_lines
from countersign.rules.names import unseen
from countersign.rules.readings import Reading, Said
from countersign.workflow.codes import normalize_code, stand_in_hash
from countersign.workflow.message_ids import content_key, message_key

OUTCOMES = tuple(Said)
MAX_ADDRESSES = 50


@dataclass(frozen=True)
class InboundSettings:
    """Where replies come to, and which server's verdict on senders is trusted."""

    reply_local: str = "confirm"
    mail_domain: str = "countersign.localhost"
    trusted_authserv_id: str | None = None  # None: every sender is taken as authenticated

    @classmethod
    def from_config(cls, config: Config) -> InboundSettings:
        return cls(
            reply_local=config.mail.reply_local,
            mail_domain=config.mail.domain,
            trusted_authserv_id=config.inbound.trusted_authserv_id or None,
        )


def read_message(
    raw: bytes,
    *,
    recipients: Sequence[str],
    envelope_sender: str | None,
    reply_local: str = "confirm",
    mail_domain: str = "countersign.localhost",
    trusted_authserv_id: str | None = None,
) -> Reading:
    """Read a raw message. `recipients` are the SMTP RCPT TOs (empty when read over IMAP)."""
    settings = InboundSettings(reply_local, mail_domain, trusted_authserv_id)
    try:
        data = bytes(raw)
        return _read(parse(data), data, recipients, envelope_sender, settings)
    except Unreadable as exc:
        return _malformed(raw, str(exc))
    except Exception as exc:
        # The contract: never raise on any input. Whatever slipped past the checks
        # (a library bug, a pathological MIME tree) is reported, not propagated.
        return _malformed(raw, f"unreadable message ({type(exc).__name__})")


def _read(
    msg: Message,
    raw: bytes,
    recipients: Sequence[str],
    envelope_sender: str | None,
    settings: InboundSettings,
) -> Reading:
    message_id = message_key(raw)
    forged = _from_problem(msg)
    if forged is not None:
        # Whose mail is it? Reading the first From would let a forger pick: nobody's.
        return Reading(message_id, None, Said.MALFORMED, None, forged, authenticated=False)
    sender = _sender(msg)
    address_code = _address_code(msg, recipients, settings.reply_local, settings.mail_domain)
    headers = headers_of(msg, raw)
    authenticated = dmarc_passed(headers, settings.trusted_authserv_id)
    replied_to = our_references(headers, settings.mail_domain)
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
            authenticated=authenticated,
            replied_to=replied_to,
        )
    verdict = _read_commands(msg)
    commanded = verdict.outcome in (Said.ACCEPT, Said.DECLINE)
    return Reading(
        message_id,
        sender,
        verdict.outcome,
        verdict.code or address_code,
        verdict.reason,
        authenticated=authenticated,
        replied_to=replied_to,
        comment=comment_of(verdict.rest) if commanded else None,
    )


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
    """Nothing in an unreadable message is vouched for, nor answers any notice of ours."""
    if isinstance(raw, bytes | bytearray | memoryview):
        key = message_key(bytes(raw))
    else:
        key = content_key(repr(raw).encode())
    return Reading(key, None, Said.MALFORMED, None, reason, authenticated=False)


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
