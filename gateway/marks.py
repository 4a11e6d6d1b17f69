"""Marks that every notice carries, shared by the composer and the reply reader.

The reply reader treats a line holding a NOTICE_MARKS prefix as the start of
a quoted copy of one of our own notices, even when a client quoted it without
any marker. Each language's notices open with the mark of that language
(templates/{language}/words.j2 prints it), so that no notice has to carry
another language's words, and a copy of either is recognised in a reply in
any language.
"""

SUBJECT_PREFIX = "[Countersign #{request_id}]"
NOTICE_MARKS = {
    "en": "Countersign request #",
    "fr": "Demande Countersign n° ",
}


def holds_notice_mark(line: str) -> bool:
    """Whether a line of a reply holds the opening mark of one of our notices."""
    return any(mark in line for mark in NOTICE_MARKS.values())
