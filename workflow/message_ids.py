"""The one Message-ID rule, read from the header block alone.

It runs before the 250 is given (storing deduplicates on it) and again in the
reader (gateway/mail_in/reading.py), so the two can never disagree about a message;
a full parse would cost too much at the door.
"""

from __future__ import annotations

import hashlib
import re

HEADER_SCAN = 64 * 1024
MAX_MESSAGE_ID = 250  # longer is not a real Message-ID; fall back to the content hash

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MESSAGE_ID_HEADER = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
_BRACKETED_ID = re.compile(r"<([^<>\s]{1,250})>")  # "<id> (comment)" happens
_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces


def message_key(raw: bytes) -> str:
    """The Message-ID without <>, or "sha256:<hex>" of the bytes when there is no usable one."""
    head = raw[:HEADER_SCAN]
    end = _HEADER_END.search(head)
    match = _MESSAGE_ID_HEADER.search(head[: end.start()] if end else head)
    if match is not None:
        value = re.sub(r"\r?\n", "", match.group(1).decode("ascii", "replace"))
        bracketed = _BRACKETED_ID.search(value)
        value = bracketed.group(1) if bracketed else value.strip()
        if value and len(value) <= MAX_MESSAGE_ID and _PRINTABLE.match(value):
            return value
    return content_key(raw)


def content_key(raw: bytes) -> str:
    """The key of a message without a usable Message-ID: the hash of its bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def headers_only(raw: bytes) -> bytes:
    """The header block of a message, up to its empty line (all of it if it has none)."""
    end = _HEADER_END.search(raw, 0, HEADER_SCAN)
    return raw[: end.end()] if end else raw[:HEADER_SCAN]
