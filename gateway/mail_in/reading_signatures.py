"""Signatures that a mail client marks only in its HTML.

Gmail, Outlook, Apple Mail and Thunderbird wrap the signature they insert in
an element of their own (class ``gmail_signature``, id ``Signature``, id
``AppleMailSignature``, class ``moz-signature``, ...), and many of them write
no "-- " line before it, in the HTML part or in the plain one. A signature
such as "Confirmed partner of ACME" must never be read as a command, so the
marked elements are cut from the HTML, and the plain text alternative is cut
where the signature's first line begins.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Compared lower-cased; Outlook prefixes quoted ids with "x_".
SIGNATURE_CLASSES = frozenset({"gmail_signature", "moz-signature", "applemailsignature"})
SIGNATURE_IDS = frozenset(
    {"signature", "applemailsignature", "ms-outlook-mobile-signature", "divsignature"}
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_WORDY = re.compile(r"\w\w")  # a signature line worth cutting at has two word characters


def _is_signature(attrs: list[tuple[str, str | None]]) -> bool:
    for name, value in attrs:
        if not value:
            continue
        if name == "class" and SIGNATURE_CLASSES.intersection(value.lower().split()):
            return True
        if name == "id" and value.lower().removeprefix("x_") in SIGNATURE_IDS:
            return True
    return False


class _SignatureFinder(HTMLParser):
    """Offsets of the outermost signature elements of a document."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", html)]
        self._open: list[str] = []
        self._signature_depth: int | None = None
        self._start = 0
        self.spans: list[tuple[int, int]] = []

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        if self._signature_depth is None and _is_signature(attrs):
            self._signature_depth = len(self._open)
            self._start = self._offset()
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self._open:
            return  # a stray end tag closes nothing
        # An end tag closes every element left open inside it (<p> and <li> often are).
        while self._open and self._open.pop() != tag:
            pass
        if self._signature_depth is not None and len(self._open) <= self._signature_depth:
            self.spans.append((self._start, self._offset() + len(f"</{tag}>")))
            self._signature_depth = None

    def finish(self, length: int) -> list[tuple[int, int]]:
        self.close()
        if self._signature_depth is not None:  # never closed: it runs to the end
            self.spans.append((self._start, length))
        return self.spans


def signature_spans(html: str) -> list[tuple[int, int]]:
    """Where the marked signatures of `html` start and end (empty when none is marked)."""
    if "signature" not in html.lower():  # the cheap test: most replies have none
        return []
    finder = _SignatureFinder(html)
    try:
        finder.feed(html)
        return finder.finish(len(html))
    except (AssertionError, ValueError, IndexError):  # markup the parser gives up on
        return []


def without_signatures(html: str, spans: list[tuple[int, int]]) -> str:
    """`html` with the given spans cut out."""
    kept, at = [], 0
    for start, end in spans:
        kept.append(html[at:start])
        at = max(at, end)
    kept.append(html[at:])
    return "".join(kept)


def first_signature_line(signature_text: str) -> str | None:
    """The line a plain alternative's signature starts with, as the reader cleans lines."""
    for line in signature_text.split("\n"):
        cleaned = line.strip().strip("*_ ").strip()
        if _WORDY.search(cleaned):
            return cleaned
    return None


def cut_plain_at(text: str, first_line: str) -> str:
    """`text` up to the first unquoted line that is `first_line` (all of it when none is)."""
    at = 0
    for line in text.split("\n"):
        if line.strip() == first_line:
            return text[:at]
        at += len(line) + 1
    return text
