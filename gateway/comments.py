"""A validator's own words: the rest of a deciding command line, or the page's and
the API's comment field, with every code cut out (a comment is shown to others).

"Decline: wrong account" gives "wrong account"; a code typed or pasted beside
the words, in any grouping, or the stand-in of one (workflow/redaction.py), never
travels with them.
"""

from __future__ import annotations

import re

from countersign.gateway.mail_in.reading_commands import CODE_CHARS, CODE_TOKENS, find_code
from countersign.rules.names import clean_comment
from countersign.workflow.codes import normalize_code

_EDGE = re.compile(r"^[\s:;,.!\-\u2013\u2014]+|[\s:;,\-\u2013\u2014]+$")


_SHOWN_CODE = re.compile(
    r"(?<![A-Za-z0-9])(?:[A-Za-z2-7]{8}(?:[\s.\-]+[A-Za-z2-7]{8}){3}|[A-Za-z2-7]{32})(?![A-Za-z0-9])"
)


def without_codes(text: str) -> str:
    """``text`` with every run of tokens that reads as a code cut out.

    Codes as shown (four groups of eight) first, so that the words before one
    are not taken for its first groups; then any other grouping find_code reads.
    """
    text = _SHOWN_CODE.sub("", text)
    while (code := find_code(text)) is not None:
        text = _cut_code(text, code)
    return text


def comment_of(rest: str) -> str | None:
    """What a command line says after its command word, with every code cut out.

    Runs of tokens that read as a code go (a comment is shown to others: a code
    must never travel with it), then the separators at either end.
    """
    return clean_comment(_EDGE.sub("", " ".join(without_codes(rest).split())))


def _cut_code(text: str, code: str) -> str:
    """``text`` without the tokens that spell ``code`` (as typed: any case, any grouping)."""
    letters = [m for m in CODE_TOKENS.finditer(text)]
    for start in range(len(letters)):
        joined = ""
        for end in range(start, len(letters)):
            joined += letters[end].group(0)
            if normalize_code(joined) == code:
                return text[: letters[start].start()] + text[letters[end].end() :]
            if len(joined) >= CODE_CHARS:
                break
    return text.replace(code, "")  # not reached: find_code read it from these tokens
