"""No live code at rest in the inbox: codes are taken out of a message before it is stored.

Every run of text that has a code's shape (32 base32 characters, in one piece
or in four groups of eight with a dash, dot or space between) is replaced by a
stand-in, ``hashed`` and the SHA-256 of the canonical code: the hash the
validator row already holds, so the stored copy still says which code the
sender used, and nothing more.  This covers the envelope and header addresses
(``confirm+CODE@``), the command line and the quoted link, and, decoded then
encoded again, the text of base64 and quoted-printable parts.

A stand-in is read back as a code only if its hash is one this redaction put
there (the row's ``code_hashes``): a sender who writes one in by hand, having
learned a hash somehow, gets nothing from it.

What is not caught: a code typed split some other way (``ABCD EFGH ...``) stays
as typed; the reader still finds it.
"""

from __future__ import annotations

import base64
import email
import hashlib
import quopri
import re
from collections.abc import Sequence
from email.generator import BytesGenerator
from email.header import Header, decode_header, make_header
from email.message import Message
from email.policy import compat32
from io import BytesIO

from countersign.workflow.codes import normalize_code, stand_in

MAX_HASHES = 50
_GROUP = rb"[A-Za-z2-7]{8}"
# Not after "<": our own Message-IDs are <hex@domain>, and hex can look like base32.
# After "=3D" too: a quoted-printable "=" (``?token=3DCODE``).
# One separator throughout, as codes are shown: "Accepted ABCDEFGH-..." is the word
# and the code, not a code made of the word and three groups.
_CODE = re.compile(
    rb"(?:(?<==3D)|(?<![A-Za-z0-9<]))"
    + _GROUP
    + rb"([-. ]?)"
    + _GROUP
    + rb"\1"
    + _GROUP
    + rb"\1"
    + _GROUP
    + rb"(?![A-Za-z0-9])"
)
_ENCODED_PART = re.compile(
    rb"^content-transfer-encoding:[ \t]*(base64|quoted-printable)|=\?[^?\s]+\?[bq]\?",
    re.IGNORECASE | re.MULTILINE,
)


def redact_message(raw: bytes, recipients: Sequence[str]) -> tuple[bytes, list[str], list[str]]:
    """The message and its recipients without codes, and the hashes of the codes taken out."""
    found: dict[str, None] = {}  # ordered set
    cleaned = _redact_bytes(raw, found)
    if _ENCODED_PART.search(cleaned):
        cleaned = _redact_parts(cleaned, found)
    addresses = [_redact_bytes(r.encode("utf-8", "surrogateescape"), found) for r in recipients]
    return (
        cleaned,
        [a.decode("utf-8", "surrogateescape") for a in addresses],
        list(found)[:MAX_HASHES],
    )


def redact_text(text: str) -> str:
    """``text`` with every code-shaped run replaced by its stand-in (for log lines)."""
    data = text.encode("utf-8", "surrogateescape")
    cleaned = _redact_bytes(data, {})
    return text if cleaned == data else cleaned.decode("utf-8", "surrogateescape")


def _redact_bytes(data: bytes, found: dict[str, None]) -> bytes:
    def replace(match: re.Match[bytes]) -> bytes:
        canonical = normalize_code(match[0].decode("ascii"))
        if canonical is None:  # cannot happen with this pattern; kept as it was
            return match[0]
        code_hash = hashlib.sha256(canonical.encode("ascii")).hexdigest()
        found[code_hash] = None
        return stand_in(code_hash).encode("ascii")

    return _CODE.sub(replace, data)


def _redact_parts(raw: bytes, found: dict[str, None]) -> bytes:
    """Decode each base64 or quoted-printable part, take the codes out, encode it back."""
    try:
        msg = email.message_from_bytes(raw, policy=compat32)
        changed = [_redact_part(part, found) for part in msg.walk() if not part.is_multipart()]
        changed += [_redact_headers(part, found) for part in msg.walk()]
        return _serialize(msg, raw) if any(changed) else raw
    except Exception:  # a message the library cannot take apart is kept as it came
        return raw


def _redact_part(part: Message, found: dict[str, None]) -> bool:
    """Take the codes out of the part as decoded under each encoding its headers declare.

    A part may declare two (a mailer's bug, or a trick): the library reads the
    first, another client may read the last, so every declared one is cleaned.
    """
    declared = [str(v).strip().lower() for v in part.get_all("Content-Transfer-Encoding") or []]
    changed = False
    for encoding in dict.fromkeys(e for e in declared if e in ("base64", "quoted-printable")):
        payload = _decoded(part, encoding)
        if payload is None:
            continue
        cleaned = _redact_bytes(payload, found)
        if cleaned != payload:
            encoded = (
                base64.encodebytes(cleaned)
                if encoding == "base64"
                else quopri.encodestring(cleaned)
            )
            part.set_payload(encoded.decode("ascii"))
            changed = True
    return changed


def _decoded(part: Message, encoding: str) -> bytes | None:
    """The part's payload decoded as ``encoding`` (the library's own, lenient decoding)."""
    text = part.get_payload()
    if not isinstance(text, str):
        return None
    probe = Message()
    probe["Content-Transfer-Encoding"] = encoding
    probe.set_payload(text)
    payload = probe.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else None


def _redact_headers(part: Message, found: dict[str, None]) -> bool:
    """RFC 2047 encoded words (a Subject typed with an accent) decoded, codes taken out."""
    changed = False
    for name in {n for n, value in part.items() if "=?" in str(value)}:
        values = [str(v) for v in part.get_all(name) or []]
        cleaned = [_redact_header(value, found) for value in values]
        if cleaned != values:
            del part[name]  # all of that name, written back in their order
            for value in cleaned:
                part[name] = value
            changed = True
    return changed


def _redact_header(value: str, found: dict[str, None]) -> str:
    decoded = str(make_header(decode_header(value)))
    cleaned = _redact_bytes(decoded.encode("utf-8"), found).decode("utf-8")
    return value if cleaned == decoded else Header(cleaned, "utf-8").encode()


def _serialize(msg: Message, raw: bytes) -> bytes:
    out = BytesIO()
    linesep = "\r\n" if b"\r\n" in raw[:4096] else "\n"
    BytesGenerator(out, mangle_from_=False, policy=compat32.clone(linesep=linesep)).flatten(msg)
    return out.getvalue()
