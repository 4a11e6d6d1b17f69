"""Validation codes: personal, single use, stored only as a hash.

A code is 160 random bits from `secrets`, written in RFC 4648 base32
(A-Z, 2-7): one case, no look-alike pairs like 0/O or 1/l, and it survives
mail systems that lowercase the local part of `confirm+CODE@domain`.
It is shown in four groups of eight for people who type it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Sequence

CODE_BYTES = 20  # 160 bits: 32 base32 characters, no padding
CODE_LENGTH = 32
_GROUP = 8
_ALPHABET = re.compile(r"^[A-Z2-7]{32}$")
# What may separate groups when a person copies a code: dashes, spaces, dots.
_SEPARATORS = re.compile(r"[\s\-.]+")


def new_code() -> str:
    """A fresh code in its display form, e.g. ``ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567``."""
    raw = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode("ascii")
    return "-".join(raw[i : i + _GROUP] for i in range(0, CODE_LENGTH, _GROUP))


def normalize_code(text: str) -> str | None:
    """The canonical form of a typed or copied code, or None if it cannot be one."""
    candidate = _SEPARATORS.sub("", text).upper()
    return candidate if _ALPHABET.match(candidate) else None


def hash_code(code: str) -> str:
    """SHA-256 of the canonical code: enough for 160 random bits (no dictionary to try)."""
    canonical = normalize_code(code)
    if canonical is None:
        raise ValueError("not a validation code")
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


# What workflow/redaction.py puts where a code was in a stored message.
STAND_IN = "hashed"
_STAND_IN = re.compile(r"^hashed([0-9a-f]{64})$", re.IGNORECASE)


def stand_in(code_hash: str) -> str:
    return f"{STAND_IN}{code_hash}"


def stand_in_hash(text: str) -> str | None:
    """The hash a stand-in carries, or None when ``text`` is not one."""
    match = _STAND_IN.match(text.strip())
    return match[1].lower() if match else None


def hash_of(text: str) -> str | None:
    """The hash a code or a stand-in names (None: neither); see codes_honored for stand-ins."""
    carried = stand_in_hash(text)
    if carried is not None:
        return carried
    canonical = normalize_code(text)
    return hash_code(canonical) if canonical is not None else None


def honored(text: str | None, produced: Sequence[str]) -> str | None:
    """``text`` as a code, unless it is a stand-in that the redaction did not produce."""
    if text is None:
        return None
    carried = stand_in_hash(text)
    return text if carried is None or carried in produced else None
