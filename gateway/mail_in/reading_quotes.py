"""Cut a reply's new text from what it quotes.

The structural cut here is the one that decides. It reads line by line:

- '>' lines are quoted: dropped, and reading goes on after them so that a
  bottom-posted reply is found. A line glued under a quoted line (no blank
  line between) is a badly re-wrapped piece of the quote, dropped too, when
  that quoted line stops mid-sentence; under a quoted line that ends one, it
  is the sender's own text (bottom-posting as Thunderbird writes it);
- a quote header ("On ... wrote:", "Le ... a écrit :", "Am ... schrieb ...:",
  also wrapped over two lines as Gmail does) is dropped when '>' lines follow
  it, and ends the new text when they do not (the quote follows unmarked);
- an Outlook header block (From:/Sent:, De :/Envoyé :, Von:/Gesendet:), an
  "Original Message" or "Forwarded message" rule, a line of underscores, the
  "-- " signature separator, a "Sent from my iPhone" line, or any line holding
  one of gateway.marks' notice marks (a copy of our own notice, marked or
  not) end it.

Only the first MAX_NEW_LINES non-blank lines that survive are returned.
mailparser_reply is run as a second opinion (see library_reply) but never
overrides this cut.
"""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser
from mailparser_reply.parser import EmailMessage

from countersign.gateway.marks import holds_notice_mark

MAX_NEW_LINES = 10
MAX_LINES_SCANNED = 2000
MAX_LINE = 1000  # chars of a line we look at; bounds every per-line regex
SIGNATURE_LINES = 10  # how far up a quoted signature's separator is looked for
LOOKAHEAD = 4  # lines looked at after a quote header or a From: line
LIBRARY_LINES = 50  # mailparser_reply has cubic-time regexes: feed it a small head
LIBRARY_LINE = 120
LIBRARY_LANGUAGES = ["en", "fr", "de"]
# Its time grows with every line it is given, and a reply's first quote header is near
# the top: it is first given the shorter heads, and the whole head only when its first
# header does not end LIBRARY_MARGIN lines above the last written line of a short head.
LIBRARY_SHORT_HEADS = (10, 16)  # 10: Gmail's header, wrapped, on lines 3-4; 16: an Outlook block
# Its header patterns read at most 4 line breaks past where a match starts or ends (the
# widest: "Am\s(?:.+?\s?)schrieb\s(?:.+?\s?.+?):", and two lines of an Outlook block), so
# with 6 written lines below the first header the short head finds the very match the
# whole head would, with the same text before it.
LIBRARY_MARGIN = 6
# EmailReplyParser.read builds an EmailMessage with the parser's checked language list;
# the message builds its patterns from those languages alone, so they are built once here
# and handed to each message (they are its dataclass fields).
_LIBRARY_LANGUAGES = tuple(EmailReplyParser(languages=LIBRARY_LANGUAGES).languages)
_PATTERNS = EmailMessage(text="", languages=list(_LIBRARY_LANGUAGES))
_PATTERN_FIELDS = {
    "_header_regex": _PATTERNS.HEADER_REGEX,
    "_disclaimers_regex": _PATTERNS.DISCLAIMERS_REGEX,
    "_signature_regex": _PATTERNS.SIGNATURE_REGEX,
}

_INVISIBLE = "\u200b\u200c\u200d\ufeff"
_QUOTE_HEADER_END = re.compile(
    r"(?:wrote|a [ée]crit|schrieb\b[^:]{0,200}|escribi[óo]|ha scritto|schreef|skrev|napisa[łl])"
    r"\s*:\s*$",
    re.I,
)
_QUOTE_HEADER_START = re.compile(r"^(?:On|Le|Am|El|Il|Op)\s", re.I)
_FROM_LINE = re.compile(r"^[*\s]*(?:From|De|Von|Van|Da)\s*:", re.I)
_HEADER_LINE = re.compile(
    r"^[*\s]*(?:Sent|Date|To|Subject|Cc|Envoy[ée]|[ÀA]|Objet|Gesendet|Datum|An|Betreff)\s*:", re.I
)
_RULE = re.compile(
    r"^-{2,}\s*(?:original message|message d'origine|ursprüngliche nachricht|original-nachricht"
    r"|forwarded message|message transf[ée]r[ée]|weitergeleitete nachricht)\s*-{2,}$",
    re.I,
)
_FORWARD_INTRO = re.compile(
    r"^(?:begin forwarded message|d[ée]but du message r[ée]exp[ée]di[ée]"
    r"|anfang der weitergeleiteten nachricht)\s*:$",
    re.I,
)
# How a quoted line that closes a sentence ends: . ! ? : or ; maybe before a closing quote.
_SENTENCE_END = re.compile(r"[.!?:;…][\"'»\u201d\u2019)\]]*$")
_UNDERSCORES = re.compile(r"^_{10,}$")
_SENT_FROM = re.compile(
    r"^(?:sent from my\b|sent from (?:outlook|mail for|yahoo)|get outlook for\b|sent via\b"
    r"|envoy[ée] (?:de|depuis|à partir de) (?:mon|outlook)\b|von meinem\b.*\bgesendet"
    r"|gesendet (?:von|mit)\b)",
    re.I,
)


def _clean(line: str) -> str:
    return line[:MAX_LINE].strip().strip(_INVISIBLE).strip()


def _is_quoted(line: str) -> bool:
    return line.startswith(">")


def _continues_quote(lines: list[str], i: int) -> bool:
    """Whether line i is a re-wrapped tail of the quoted line just above it.

    A client that re-wraps a quote without re-marking it leaves the end of a
    sentence on an unmarked line: the quoted line above it stops mid-sentence.
    """
    if i == 0 or not lines[i] or not _is_quoted(lines[i - 1]):
        return False
    above = _unquoted(lines[i - 1])
    return bool(above) and not _SENTENCE_END.search(above) and not _in_quoted_signature(lines, i)


def _unquoted(line: str) -> str:
    return line.lstrip("> ").strip()


def _in_quoted_signature(lines: list[str], i: int) -> bool:
    """Whether the quoted lines just above line i follow a quoted "-- " line.

    A signature's lines end no sentence, and a re-wrapped tail of one is no
    command: the line glued under a quoted signature is the sender's own.
    """
    for above in reversed(lines[max(0, i - SIGNATURE_LINES) : i]):
        if not _is_quoted(above):
            return False
        if _unquoted(above) == "--":
            return True
    return False


def _ends_new_text(lines: list[str], i: int) -> bool:
    line = lines[i]
    if holds_notice_mark(line) or line == "--":
        return True
    if _RULE.match(line) or _FORWARD_INTRO.match(line) or _UNDERSCORES.match(line):
        return True
    if _SENT_FROM.match(line):
        return True
    # "From: ..." alone may be something the sender typed; with "Sent:"/"To:" below it,
    # it is the header block Outlook writes above an unmarked copy of the original.
    if _FROM_LINE.match(line):
        following = [x for x in lines[i + 1 : i + 1 + LOOKAHEAD] if x][:2]
        return any(_HEADER_LINE.match(x) for x in following)
    return False


def _ends_quote_header(line: str) -> bool:
    # The cheap test first: the regex is only worth running on a line ending with ':'.
    return line.endswith(":") and _QUOTE_HEADER_END.search(line) is not None


def _quote_header_span(lines: list[str], i: int) -> int:
    """How many lines a quote header starting at line i spans (0: it is not one)."""
    line = lines[i]
    if _ends_quote_header(line):
        return 1
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    if _QUOTE_HEADER_START.match(line) and not _is_quoted(nxt):
        return 2 if _ends_quote_header(nxt) else 0
    return 0


def _quoted_follows(lines: list[str], i: int) -> bool:
    following = [x for x in lines[i : i + LOOKAHEAD] if x]
    return bool(following) and _is_quoted(following[0])


def new_lines(text: str) -> list[str]:
    """The first non-blank lines the sender wrote, quotes and signatures cut away."""
    lines = [_clean(x) for x in text.split("\n", MAX_LINES_SCANNED)[:MAX_LINES_SCANNED]]
    kept: list[str] = []
    i = 0
    while i < len(lines) and len(kept) < MAX_NEW_LINES:
        line = lines[i]
        if _is_quoted(line):
            i += 1
            continue
        if _ends_new_text(lines, i):
            break
        if _continues_quote(lines, i):
            i += 1
            continue
        span = _quote_header_span(lines, i)
        if span:
            if not _quoted_follows(lines, i + span):
                break
            i += span
            continue
        if line:
            kept.append(line)
        i += 1
    return kept


def library_reply(text: str) -> str | None:
    """mailparser_reply's idea of the latest reply, or None when it fails.

    Only a head of the text is given: its quote-header patterns backtrack
    quadratically on long lines.
    """
    lines = [x[:LIBRARY_LINE] for x in text.split("\n", LIBRARY_LINES)[:LIBRARY_LINES]]
    try:
        reply = _library_read(lines).latest_reply
    except Exception:
        return None
    return reply if isinstance(reply, str) else None


def _library_read(lines: list[str]) -> EmailMessage:
    """The library's reading of a short head when that is its reading of the whole head."""
    for size in LIBRARY_SHORT_HEADS:
        if len(lines) <= size:
            break
        short = _library_message(lines[:size])
        if _header_well_inside(short):
            short.read()
            # replies[0] is the text above the first header unless that text was blank:
            # then the library reads on to the second header, maybe past the short head.
            if short.replies and not short.replies[0].headers:
                return short
            break
    return _library_message(lines).read()


def _library_message(lines: list[str]) -> EmailMessage:
    # What EmailReplyParser(languages=LIBRARY_LANGUAGES).read builds; the list is copied
    # because EmailMessage may append to it.
    return EmailMessage(
        text="\n".join(lines), languages=list(_LIBRARY_LANGUAGES), **_PATTERN_FIELDS
    )


def _header_well_inside(message: EmailMessage) -> bool:
    """Whether the first header match ends LIBRARY_MARGIN line breaks above the last written line.

    Below that line the short head and the whole head can differ (the library's
    normalising drops blank lines above a rule of underscores), above it they are
    the same text, and no match of its patterns reads that far.
    """
    text = message.text
    match = message.HEADER_REGEX.search(text)
    return (
        match is not None
        and text[: match.start()].strip() != ""  # else the read goes on to the second header
        and text[match.end() :].rstrip().count("\n") >= LIBRARY_MARGIN
    )
