"""The one check of names and addresses, for every door (command line, import, API).

Each check gives the normalised value or a Refusal whose message says what is
wrong, so that the same bad value gets the same words wherever it comes in.

- An email address is a mailbox that mail can be delivered to: one ``@``; a
  local part of RFC 5321 atoms (dot-atom, no quoting) of at most 64 octets; a
  domain of at most 255 octets, labels of letters, digits and hyphens of at
  most 63 octets, no empty label (so no trailing dot); at most 254 octets in
  all.  An internationalised domain (RFC 6531's IDN) is taken and kept in its
  ASCII form (``xn--...``), which any relay can send to; a non-ASCII local part
  would need SMTPUTF8 end to end, which the outbound mail does not use.
- A service name: letters, digits, dot, hyphen and underscore, at most 253,
  no empty label.
- A zone: 2 to 8 letters (EU, CA, US, ...).
- No control, format (zero-width, bidi override) or unassigned character
  anywhere: they make look-alikes in listings and can move a terminal.
"""

from __future__ import annotations

import re
import unicodedata

from countersign.rules.contacts import Refusal

MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path of 256 octets, with its <>
MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_LABEL = 63
MAX_SERVICE = 253
SHOWN = 80  # characters of a refused value echoed in its reason

_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_SERVICE = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")
_ZONE = re.compile(r"^[A-Z]{2,8}$")
# Control, format, surrogate, private use, unassigned; separators other than space.
_UNSEEN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


def shown(text: str) -> str:
    """A value as a reason quotes it: escaped, and cut when it is long."""
    return repr(text[:SHOWN]) + ("..." if len(text) > SHOWN else "")


def unseen(text: str) -> bool:
    """Whether ``text`` holds a character a terminal would not show as itself."""
    if text.isascii():
        # The only such ASCII characters are the controls (Cc), which isprintable refuses;
        # this spares a category lookup per character on every address of a bulk import.
        return not text.isprintable()
    return any(unicodedata.category(ch) in _UNSEEN and ch != " " for ch in text)


def check_email(text: str, what: str = "email") -> str:
    """The address, lowercased (its domain in ASCII form), or a Refusal saying why not."""
    problem, address = _email(text.strip())
    if problem is not None:
        raise Refusal("bad-email", f"not an email address ({what}): {problem}: {shown(text)}")
    return address


def _email(text: str) -> tuple[str | None, str]:
    if not text:
        return "empty", text
    if unseen(text) or " " in text:
        return "it holds spaces or control characters", text
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return "it needs one @ between a name and a domain", text
    problem = _local_problem(local)
    if problem is not None:
        return problem, text
    problem, ascii_domain = _domain(domain.lower())
    if problem is not None:
        return problem, text
    address = f"{local.lower()}@{ascii_domain}"
    if len(address) > MAX_ADDRESS:
        return f"longer than {MAX_ADDRESS} characters", text
    return None, address


def _local_problem(local: str) -> str | None:
    if not local.isascii():
        return "the part before @ must be ASCII (the outbound mail does not use SMTPUTF8)"
    if len(local) > MAX_LOCAL:
        return f"the part before @ is longer than {MAX_LOCAL} characters"
    if "@" in local or local.startswith('"'):
        return "quoted names and a second @ are not accepted"
    if any(not _ATOM.match(atom) for atom in local.split(".")):
        return "the part before @ has a character or a dot out of place"
    return None


def _domain(domain: str) -> tuple[str | None, str]:
    if domain.startswith("["):
        return "an address literal is not accepted as a domain", domain
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return "the domain is not a valid internationalised name", domain
    if len(domain) > MAX_DOMAIN:
        return f"the domain is longer than {MAX_DOMAIN} characters", domain
    for label in domain.split("."):
        if not label:
            return "the domain has an empty label (a dot at its start or end, or two)", domain
        if len(label) > MAX_LABEL:
            return f"a label of the domain is longer than {MAX_LABEL} characters", domain
        if not _LABEL.match(label):
            return "the domain may hold letters, digits and inner hyphens only", domain
    return None, domain


def check_service(text: str) -> str:
    """A service name, lowercased, or a Refusal saying why not."""
    name = text.strip().lower()
    problem = None
    if not name:
        problem = "empty"
    elif len(name) > MAX_SERVICE:
        problem = f"longer than {MAX_SERVICE} characters"
    elif not name.isascii() or not _SERVICE.match(name):
        problem = "letters, digits, dots, hyphens and underscores only, no empty label"
    if problem is not None:
        raise Refusal("bad-service", f"not a service name: {problem}: {shown(text)}")
    return name


def check_zone(text: str) -> str:
    """A zone, uppercased, or a Refusal saying why not."""
    zone = text.strip().upper()
    if not zone.isascii() or not _ZONE.match(zone):
        raise Refusal("bad-zone", f"not a zone: {shown(text)} (2 to 8 letters, e.g. EU, CA, US)")
    return zone


def printable(text: str) -> str:
    """``text`` for a terminal: each character it would not show as itself, escaped."""
    if not unseen(text):
        return text
    return "".join(_escaped(ch) if ch != " " and _is_unseen(ch) else ch for ch in text)


def _is_unseen(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSEEN


def _escaped(ch: str) -> str:
    code = ord(ch)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


MAX_COMMENT = 500


def clean_comment(comment: str | None) -> str | None:
    """A validator's words as kept: one line of at most 500 characters, or nothing.

    The edges cut codes out first (gateway/comments.without_codes).
    """
    if comment is None:
        return None
    text = " ".join(comment.split())[:MAX_COMMENT]
    return text or None
