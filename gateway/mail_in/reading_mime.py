"""MIME plumbing for the reply reader: parse, decode headers, pick the text to read.

Everything here is bounded: headers are cut before decoding, parts are
visited iteratively with a cap (a hostile message may nest thousands of
multiparts), and only the first bytes of the chosen text part are decoded.
"""

from __future__ import annotations

import contextlib
import email
import functools
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parseaddr

import html2text

from countersign.gateway.mail_in.reading_signatures import (
    cut_plain_at,
    first_signature_line,
    signature_spans,
    without_signatures,
)

PARSE_CAP = 512 * 1024  # bytes parsed: headers and the first parts, where a reply's text is
MAX_MULTIPARTS = 100  # deeper or wider trees are not replies (and recurse in the stdlib parser)
HEADER_CAP = 2000  # chars of one header value we decode; real ones are far shorter
TEXT_CAP = 64 * 1024  # bytes of the chosen text part we look at
MAX_PARTS = 200  # parts visited per message

_FOLDING = re.compile(r"\s+")
# Whitespace in HTML, literal or as a character reference. Any run means one space to a
# browser; to html2text, whose markdown escaping runs `^(\s*)` regexes over each text chunk,
# a run of thousands of newlines costs quadratic time.
_HTML_SPACE = re.compile(r"(?:\s|&(?:#0*(?:9|10|13|32)|#x0*(?:9|a|d|20)|NewLine|Tab);?)+", re.I)


class Unreadable(Exception):
    """The bytes are not a message we can read; the text says why."""


def parse(raw: bytes) -> Message:
    """The message from the first PARSE_CAP bytes.

    compat32 (the default policy) is used on purpose: it is the lenient parser,
    it records defects instead of raising, and flufl.bounce expects its Message.
    Truncating a big message leaves its last multipart unclosed, which that
    parser tolerates; the stdlib parser's time grows with lines and its
    recursion with nesting, hence both caps.
    """
    head = raw[:PARSE_CAP]
    if head.lower().count(b"multipart/") > MAX_MULTIPARTS:
        raise Unreadable("too many multipart parts")
    msg = email.message_from_bytes(head)
    if not msg.keys():
        raise Unreadable("no header fields")
    return msg


def _raw_header(msg: Message, name: str) -> str | None:
    wanted = name.lower()
    return next((str(v) for k, v in msg.raw_items() if k.lower() == wanted), None)


def _undo_8bit(text: str) -> str:
    """Raw 8-bit bytes in a header (common, though not RFC 5322): UTF-8, else Windows-1252.

    compat32 keeps such bytes as surrogate escapes; turned back into bytes they
    can be decoded with the charset people actually use.
    """
    if text.isascii():
        return text
    try:
        data = text.encode("utf-8", "surrogateescape")
        return data.decode("utf-8")
    except UnicodeEncodeError:
        return text  # real characters, not escaped bytes: nothing to undo
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def header_text(msg: Message, name: str) -> str:
    """The first `name` header as one line of text, RFC 2047 words decoded."""
    value = _raw_header(msg, name)
    if value is None:
        return ""
    text = _undo_8bit(value[:HEADER_CAP])
    # A broken encoded-word leaves the raw text, which is still worth reading.
    with contextlib.suppress(Exception):
        text = str(make_header(decode_header(text)))
    return _FOLDING.sub(" ", text).strip()


@functools.lru_cache(maxsize=64)
def address_in(text: str) -> str:
    """The address part of one address header value (parseaddr's, "" when none).

    Cached: the reader asks about the same From several times per message, and
    parseaddr's pure-Python tokenizer is the dearest step of each.
    """
    return parseaddr(text)[1]


def iter_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts in document order, not descending into attached messages.

    An attached message/rfc822 is somebody else's mail (a forward, a bounce's
    original): its words are never the sender's new text.
    """
    stack: list[Message] = [msg]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        if part.get_content_maintype() == "message":
            continue
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
            continue
        yield part


def _is_attachment(part: Message) -> bool:
    return (part.get_content_disposition() or "") == "attachment"


def decode_part(part: Message, cap: int = TEXT_CAP) -> str:
    """The first `cap` bytes of a part's body as text, whatever its charset claims."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    data = payload[:cap]
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # Unknown or non-text codec names ("x-bogus", "rot13"): read it as UTF-8.
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def html_to_text(html: str) -> str:
    """Plain text of an HTML body, lines kept as the sender saw them.

    body_width=0 matters: re-wrapping could move a word such as ACCEPT from the
    middle of a quoted sentence to the start of a line. Blockquotes come out
    as '> ' lines, which the quote cut then drops.
    """
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_links = True
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True
    try:
        return str(converter.handle(_HTML_SPACE.sub(" ", html[:TEXT_CAP])))
    except Exception:
        return ""


def html_reply_text(markup: str) -> str:
    """Plain text of an HTML reply, without the signatures its markup marks."""
    return html_to_text(without_signatures(markup, signature_spans(markup))) if markup else ""


def body_text(msg: Message) -> str:
    """The text the sender typed: first inline text/plain part, else the first HTML one.

    A signature that the HTML alternative marks (and the plain one may not) is
    cut from either, wherever it stands.
    """
    plain: Message | None = None
    html: Message | None = None
    for part in iter_parts(msg):
        if _is_attachment(part):
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            plain = part
        elif ctype == "text/html" and html is None:
            html = part
        if plain is not None and html is not None:
            break
    markup = decode_part(html) if html is not None else ""
    if plain is None:
        return html_reply_text(markup)
    spans = signature_spans(markup)
    text = decode_part(plain)
    for start, end in spans:
        first = first_signature_line(html_to_text(markup[start:end]))
        if first is not None:
            text = cut_plain_at(text, first)
    return text
