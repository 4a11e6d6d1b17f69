"""The command grammar: which line says ACCEPT or DECLINE, and with which code.

A command is a line whose first word (punctuation ignored, any case) is a
command word, optionally followed by the code. YES/OUI and NO/NON count only
when alone on their line: "No problem, thanks" is not a decline.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from countersign.rules.readings import Said
from countersign.workflow.codes import normalize_code, stand_in_hash

ACCEPT = Said.ACCEPT
DECLINE = Said.DECLINE
ACCEPT_WORDS = frozenset({"accept", "approve", "confirm", "accepter"})
DECLINE_WORDS = frozenset({"decline", "refuse", "reject", "refuser"})
ALONE_WORDS = {"yes": ACCEPT, "oui": ACCEPT, "no": DECLINE, "non": DECLINE}

MAX_LINE = 500  # a command line is short; the rest of a long line is not read
MAX_TOKENS = 64
MAX_CODE_TOKENS = 8  # a code typed in groups: 4 as displayed, 8 if someone splits further
CODE_CHARS = 32
MAX_SUBJECT_PREFIXES = 20

_WORDS = re.compile(r"[^\W_]+")  # letters and digits: punctuation and '_' separate words
_CODE_TOKENS = re.compile(r"[A-Za-z0-9]+")
CODE_TOKENS = _CODE_TOKENS  # gateway/comments.py cuts codes out by the same tokens
_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(re|aw|sv|antw|r[ée]f|fwd?|tr|wg)\s*(?:\[\d{1,4}\]|\(\d{1,4}\))?\s*[:\uff1a]"
    r"|\[countersign\s*#\d{1,12}\])\s*",
    re.I,
)
_FORWARD_PREFIXES = frozenset({"fwd", "fw", "tr", "wg"})


@dataclass(frozen=True)
class Command:
    """One command line: the decision, the code written on it, and what else it says."""

    decision: Said
    code: str | None
    rest: str = ""  # what follows the command word: "Decline: wrong account" -> ": wrong account"


@dataclass(frozen=True)
class Verdict:
    """What the subject and new lines say together."""

    outcome: Said  # accept, decline, ambiguous or no-command
    code: str | None  # from a command line; the caller falls back to the address
    reason: str
    rest: str = ""  # the rest of the deciding command line (gateway/comments.py reads it)


def clean_subject(subject: str) -> tuple[str, bool]:
    """The subject without Re:/AW:/Fwd:... prefixes and our tag, and whether it was forwarded."""
    forwarded = False
    for _ in range(MAX_SUBJECT_PREFIXES):
        match = _SUBJECT_PREFIX.match(subject)
        if not match or not match.group(0):
            break
        forwarded = forwarded or (match.group(1) or "").lower() in _FORWARD_PREFIXES
        subject = subject[match.end() :]
    return subject.strip(), forwarded


def parse_command(line: str) -> Command | None:
    """The command a line holds, or None."""
    line = line[:MAX_LINE]
    words = _WORDS.findall(line, 0, MAX_LINE)
    if not words:
        return None
    first = words[0].casefold()
    if first in ALONE_WORDS:
        return Command(ALONE_WORDS[first], None) if len(words) == 1 else None
    if first in ACCEPT_WORDS:
        decision = ACCEPT
    elif first in DECLINE_WORDS:
        decision = DECLINE
    else:
        return None
    rest = _after_first_word(line, words[0])
    return Command(decision, find_code(rest), rest)


def _after_first_word(line: str, word: str) -> str:
    return line[line.find(word) + len(word) :]


def find_code(text: str) -> str | None:
    """The first run of consecutive tokens that reads as a code, e.g. split as displayed."""
    tokens = _CODE_TOKENS.findall(text)[:MAX_TOKENS]
    for start in range(len(tokens)):
        if stand_in_hash(tokens[start]) is not None:
            return str(tokens[start])  # a code taken out before storing (workflow/redaction.py)
        length = 0
        for end in range(start, min(start + MAX_CODE_TOKENS, len(tokens))):
            length += len(tokens[end])
            if length > CODE_CHARS:
                break
            if length == CODE_CHARS:
                code = normalize_code("".join(tokens[start : end + 1]))
                if code is not None:
                    return code
    return None


def judge(subject: str, lines: Sequence[str]) -> Verdict:
    """Read the subject and the new lines; both decisions make the mail ambiguous."""
    cleaned, forwarded = clean_subject(subject)
    places: list[tuple[str, str]] = [(f"line {n}", line) for n, line in enumerate(lines, 1)]
    if not forwarded:
        # A forward's subject is the forwarded mail's, not something this sender says.
        places.append(("subject", cleaned))
    found = [(where, cmd) for where, line in places if (cmd := parse_command(line)) is not None]
    decisions = {cmd.decision for _, cmd in found}
    if len(decisions) > 1:
        return Verdict(Said.AMBIGUOUS, _first_code(found), "both ACCEPT and DECLINE")
    if not found:
        reason = "no command in subject or first lines"
        if forwarded:
            reason = "forwarded, no command in new text"
        return Verdict(Said.NO_COMMAND, None, reason)
    where, first = found[0]
    reason = f"{first.decision.upper()} in {where}"
    return Verdict(first.decision, _first_code(found), reason, first.rest)


def _first_code(found: Sequence[tuple[str, Command]]) -> str | None:
    return next((cmd.code for _, cmd in found if cmd.code), None)
