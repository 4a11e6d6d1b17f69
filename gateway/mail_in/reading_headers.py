"""The headers the reader reads besides the command: who vouches for the sender
(Authentication-Results) and which of our notices the mail replies to.

Read from the message the reader parsed, never parsed again; only a header block
longer than HEADER_BYTES (past which these headers are not looked at) is cut and
read on its own.
"""

from __future__ import annotations

import re
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import authres

HEADER_BYTES = 256 * 1024  # the header block looked at; a longer one is cut, not parsed whole
MAX_AUTH_RESULTS = 20
MAX_REFERENCES = 20

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_REFERENCE = re.compile(r"<([^<>\s]{1,250})>")


def headers_of(parsed: Message, raw: bytes) -> Message:
    """The reader's own parse when its headers are the first HEADER_BYTES' (nearly always).

    Both are compat32 parses of the same bytes up to the first empty line; they
    differ only when that line lies past HEADER_BYTES (header_block cuts there).
    """
    if _HEADER_END.search(raw, 0, HEADER_BYTES) is not None:
        return parsed
    return header_block(raw)


def header_block(raw: bytes) -> Message:
    """The headers alone, cut at HEADER_BYTES (cheap: no MIME parse)."""
    head = raw[:HEADER_BYTES]
    end = _HEADER_END.search(head)
    return BytesHeaderParser(policy=compat32).parsebytes(head[: end.start()] if end else head)


def dmarc_passed(headers: Message, trusted: str | None) -> bool:
    """True without a trusted server configured; else its topmost verdict must say dmarc=pass.

    Only headers the trusted server wrote count.  Its topmost one is taken: a
    sender can write an Authentication-Results of its own, but below it, since
    the trusted server adds its header on top when the mail reaches it.
    """
    if trusted is None:
        return True
    for value in (headers.get_all("Authentication-Results") or [])[:MAX_AUTH_RESULTS]:
        parsed = _auth_results(value)
        if parsed is None or str(parsed.authserv_id).lower() != trusted.lower():
            continue
        return any(
            str(result.method).lower() == "dmarc" and str(result.result).lower() == "pass"
            for result in parsed.results
        )
    return False


def _auth_results(value: object) -> Any:
    """The parsed header, or None when it does not parse (then it vouches for nothing)."""
    try:
        return authres.AuthenticationResultsHeader.parse_value(_unfold(value))
    except Exception:  # authres raises its own syntax errors, and worse on junk
        return None


def our_references(headers: Message, mail_domain: str) -> tuple[str, ...]:
    """The Message-IDs of our own domain in In-Reply-To and References (as <id>)."""
    suffix = "@" + mail_domain.lower()
    found: list[str] = []
    for name in ("In-Reply-To", "References"):
        for value in (headers.get_all(name) or [])[:MAX_REFERENCES]:
            for match in _REFERENCE.finditer(_unfold(value)[:20_000]):
                if match.group(1).lower().endswith(suffix) and f"<{match.group(1)}>" not in found:
                    found.append(f"<{match.group(1)}>")
    return tuple(found[:MAX_REFERENCES])


def _unfold(value: object) -> str:
    return re.sub(r"\r?\n", " ", str(value))
