"""The reply reader: the corpus of real-looking replies, then the grammar piece by piece."""

from __future__ import annotations

import hashlib
import json
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from countersign.gateway.mail_in.reading import OUTCOMES, Reading, read_message
from countersign.gateway.mail_in.reading_commands import (
    clean_subject,
    find_code,
    judge,
    parse_command,
)
from countersign.gateway.mail_in.reading_mime import (
    decode_part,
    header_text,
    html_reply_text,
    iter_parts,
    parse,
)
from countersign.gateway.mail_in.reading_quotes import MAX_NEW_LINES, library_reply, new_lines
from countersign.gateway.mail_in.reading_signatures import (
    cut_plain_at,
    first_signature_line,
    signature_spans,
    without_signatures,
)

CORPUS = Path(__file__).parent / "corpus"
EXPECTED: dict[str, dict[str, Any]] = json.loads((CORPUS / "expected.json").read_text())
ADDR_CODE = "K7QWJ3XRM2PZ4TLAVB6NYD5EHC3GUF7S"
LINE_CODE = "QX4LN7RAZT2MBW6EPJ5KYC3DGV7HSU4F"
CODE_BY_SOURCE = {"address": ADDR_CODE, "line": LINE_CODE, None: None}


def read_corpus(name: str) -> Reading:
    spec = EXPECTED[name]
    return read_message(
        (CORPUS / name).read_bytes(),
        recipients=spec["recipients"],
        envelope_sender=spec["envelope_sender"],
    )


def test_corpus_is_complete() -> None:
    files = {p.name for p in CORPUS.glob("*.eml")}
    assert files == set(EXPECTED), "every .eml has an expectation and the reverse"
    assert len(files) >= 45
    assert {spec["outcome"] for spec in EXPECTED.values()} == set(OUTCOMES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_outcome(name: str) -> None:
    spec = EXPECTED[name]
    reading = read_corpus(name)
    assert reading.said == spec["outcome"], reading.reason
    if spec["outcome"] in READ_FOR_COMMANDS:
        assert reading.code == CODE_BY_SOURCE[spec["code"]]
    for field in ("bounced_recipients", "bounced_request", "bounced_kind"):
        if field in spec:
            expected = tuple(spec[field]) if field == "bounced_recipients" else spec[field]
            assert getattr(reading, field) == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_identity(name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    reading = read_corpus(name)
    if reading.said == "malformed":
        assert reading.message_id == "sha256:" + hashlib.sha256(raw).hexdigest()
        assert reading.sender is None
    else:
        assert reading.message_id and not reading.message_id.startswith("<")
        assert reading.sender is not None and reading.sender == reading.sender.lower()
    assert reading.reason


def mail(
    body: str,
    *,
    subject: str = "Re: [Countersign #12] Change of contacts",
    headers: str = "",
    recipients: tuple[str, ...] = (f"confirm+{ADDR_CODE}@countersign.localhost",),
    envelope_sender: str | None = "bob@example.net",
) -> Reading:
    raw = (
        "From: Bob <Bob@Example.NET>\nTo: confirm@countersign.localhost\n"
        f"Subject: {subject}\nMessage-ID: <m1@example.net>\n{headers}"
        "Content-Type: text/plain; charset=utf-8\n\n" + body
    ).encode()
    return read_message(raw, recipients=recipients, envelope_sender=envelope_sender)


# ---------------------------------------------------------------- the grammar


@pytest.mark.parametrize(
    ("line", "decision"),
    [
        ("ACCEPT", "accept"),
        ("accept", "accept"),
        ("Accept, thanks", "accept"),
        ("Accept.", "accept"),
        ("  approve  ", "accept"),
        ("Confirm!", "accept"),
        ("Accepter", "accept"),
        ("**ACCEPT**", "accept"),
        ("— Accept", "accept"),
        ("Decline", "decline"),
        ("REFUSE please", "decline"),
        ("reject", "decline"),
        ("Refuser, merci", "decline"),
        ("Yes", "accept"),
        ("Yes!", "accept"),
        ("oui", "accept"),
        ("No.", "decline"),
        ("Non !", "decline"),
        ("No problem, thanks", None),
        ("Yes please", None),
        ("YES accept", None),
        ("I accept", None),
        ("Accepted", None),
        ("Acceptable", None),
        ("Declined", None),
        ("To accept, reply to this message with the word ACCEPT, or open:", None),
        ("", None),
        ("...", None),
    ],
)
def test_command_words(line: str, decision: str | None) -> None:
    command = parse_command(line)
    assert (command.decision if command else None) == decision


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (" QX4LN7RA-ZT2MBW6E-PJ5KYC3D-GV7HSU4F", LINE_CODE),
        (" qx4ln7ra-zt2mbw6e-pj5kyc3d-gv7hsu4f thanks", LINE_CODE),
        (" code: QX4LN7RA ZT2MBW6E PJ5KYC3D GV7HSU4F.", LINE_CODE),
        (", QX4LN7RAZT2MBW6EPJ5KYC3DGV7HSU4F", LINE_CODE),
        (" QX4L N7RA ZT2M BW6E PJ5K YC3D GV7H SU4F", LINE_CODE),
        (" QX4LN7RA-ZT2MBW6E-PJ5KYC3D", None),  # three groups only
        (" QX4LN7RA-ZT2MBW6E-PJ5KYC3D-GV7HSU41", None),  # '1' is not base32
        (" thanks a lot", None),
    ],
)
def test_code_on_the_line(text: str, code: str | None) -> None:
    assert find_code(text) == code


def test_command_line_code_wins_over_address() -> None:
    reading = mail("Accept QX4LN7RA-ZT2MBW6E-PJ5KYC3D-GV7HSU4F\n")
    assert (reading.said, reading.code) == ("accept", LINE_CODE)


def test_code_from_envelope_then_headers() -> None:
    assert mail("Accept\n").code == ADDR_CODE
    assert mail("Accept\n", recipients=()).code is None  # To: has no +CODE here
    upper = (f"CONFIRM+{ADDR_CODE.lower()}@COUNTERSIGN.LOCALHOST",)
    assert mail("Accept\n", recipients=upper).code == ADDR_CODE
    elsewhere = (f"confirm+{ADDR_CODE}@example.org",)
    assert mail("Accept\n", recipients=elsewhere).code is None
    other_local = (f"reply+{ADDR_CODE}@countersign.localhost",)
    assert mail("Accept\n", recipients=other_local).code is None
    custom = read_message(
        f"From: b@example.net\nTo: ok+{ADDR_CODE}@mail.example\n\nAccept\n".encode(),
        recipients=(),
        envelope_sender=None,
        reply_local="ok",
        mail_domain="mail.example",
    )
    assert custom.code == ADDR_CODE


@pytest.mark.parametrize(
    ("subject", "cleaned", "forwarded"),
    [
        ("Re: [Countersign #12] Change", "Change", False),
        ("RE: AW: Re: Réf: accept", "accept", False),
        ("Re[2]: TR: decline", "decline", True),
        ("Fwd: FW: WG: [Countersign #7] x", "x", True),
        ("Accept - Re: [Countersign #12] x", "Accept - Re: [Countersign #12] x", False),
        ("Reply all", "Reply all", False),
    ],
)
def test_subject_cleaning(subject: str, cleaned: str, forwarded: bool) -> None:
    assert clean_subject(subject) == (cleaned, forwarded)


def test_subject_command_and_ambiguity() -> None:
    assert mail("", subject="Re: Decline").said == "decline"
    assert mail("Accept\n", subject="Re: Decline").said == "ambiguous"
    assert mail("Accept\nAccept\n", subject="accept").said == "accept"
    assert mail("", subject="Fwd: Accept").said == "no-command"
    assert mail("Hello\n").said == "no-command"


# ---------------------------------------------------------------- the quote cut


def test_quote_cut_structures() -> None:
    notice = "Countersign request #12\nTo accept, reply with\nACCEPT, or open:\n"
    assert new_lines("Accept\n\n" + notice) == ["Accept"]
    assert new_lines("Accept\n-- \nDecline\n") == ["Accept"]
    assert new_lines("> Decline\n\nAccept\n") == ["Accept"]
    assert new_lines("> To accept, reply with\nDECLINE now\n\nAccept") == ["Accept"]
    assert new_lines("Accept\nSent from my iPhone\nDecline") == ["Accept"]
    assert new_lines("Accept\n-----Original Message-----\nDecline") == ["Accept"]
    assert new_lines("Accept\n_______________\nDecline") == ["Accept"]
    assert new_lines("Accept\nFrom: A <a@b>\nSent: today\nDecline") == ["Accept"]
    assert new_lines("From: me\nAccept") == ["From: me", "Accept"]  # one header line is text
    assert new_lines("Accept\nDe : A\nEnvoyé : lundi\nDecline") == ["Accept"]
    assert new_lines("Accept\nVon: A\nGesendet: Montag\nDecline") == ["Accept"]


def test_quote_headers_end_or_skip() -> None:
    wrapped = "On Mon, 23 Nov 2026 at 10:02, Countersign <\ncontacts@c.localhost> wrote:\n"
    assert new_lines("Accept\n\n" + wrapped + "\n> Decline\n") == ["Accept"]
    assert new_lines(wrapped + "> Decline\n\nAccept") == ["Accept"]  # bottom-posted
    assert new_lines("Accept\n" + wrapped + "Decline\n") == ["Accept"]  # unmarked quote ends it
    assert new_lines("Oui\nLe lun. 23 nov. 2026 à 10:02, X <x@y> a écrit :\nNon") == ["Oui"]
    assert new_lines("Ja\nAm 23.11.2026 um 10:02 schrieb X <x@y>:\nNein") == ["Ja"]


def test_only_the_first_new_lines_are_read() -> None:
    text = "".join(f"line {n}\n\n" for n in range(20))
    assert len(new_lines(text)) == MAX_NEW_LINES


# ---------------------------------------------------------------- machines


@pytest.mark.parametrize(
    ("headers", "envelope_sender", "subject"),
    [
        ("Auto-Submitted: auto-replied\n", "bob@example.net", "Re: x"),
        ("Auto-Submitted: auto-generated; owner-email=x@y\n", "bob@example.net", "Re: x"),
        ("Precedence: junk\n", "bob@example.net", "Re: x"),
        ("Precedence: list\n", "bob@example.net", "Re: x"),
        ("List-Unsubscribe: <mailto:u@x>\n", "bob@example.net", "Re: x"),
        ("X-Autorespond: yes\n", "bob@example.net", "Re: x"),
        ("", "<>", "Re: x"),
        ("", "", "Re: x"),
        ("Return-Path: <>\n", None, "Re: x"),
        ("Sender: postmaster@example.net\n", "bob@example.net", "Re: x"),
        ("", "bob@example.net", "Out of office: Re: x"),
        ("", "bob@example.net", "RE: Automatic reply: x"),
        ("", "bob@example.net", "Auto: x"),
        ("", "bob@example.net", "Absence : x"),
        ("", "bob@example.net", "Réponse automatique : x"),
        ("", "bob@example.net", "Automatische Antwort: x"),
    ],
)
def test_automated(headers: str, envelope_sender: str | None, subject: str) -> None:
    reading = mail("Accept\n", headers=headers, envelope_sender=envelope_sender, subject=subject)
    assert reading.said == "automated", reading.reason
    assert reading.code == ADDR_CODE  # kept for the audit trail


@pytest.mark.parametrize(
    "headers",
    [
        "Auto-Submitted: no\n",
        "Precedence: first-class\n",
        "X-Auto-Response-Suppress: All\n",
        "X-Autoreply: no\n",
    ],
)
def test_not_automated(headers: str) -> None:
    assert mail("Accept\n", headers=headers).said == "accept"


def test_subject_mentioning_absence_mid_line_is_not_automation() -> None:
    assert mail("Accept\n", subject="Re: Accept during my absence").said == "accept"


# ---------------------------------------------------------------- identity and malformed


def test_identity() -> None:
    reading = mail("Accept\n")
    assert reading.message_id == "m1@example.net"
    assert reading.sender == "bob@example.net"
    raw = b"From: bob@example.net\n\nAccept\n"
    anonymous = read_message(raw, recipients=(), envelope_sender=None)
    assert anonymous.message_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    nobody = read_message(b"From: not an address\n\nAccept\n", recipients=(), envelope_sender=None)
    assert nobody.sender is None


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00\xff\xfe", b"ACCEPT\n", b"\n\nAccept", "é".encode() * 1000],
)
def test_malformed(raw: bytes) -> None:
    reading = read_message(raw, recipients=(), envelope_sender=None)
    assert reading.said == "malformed"
    assert reading.message_id == "sha256:" + hashlib.sha256(raw).hexdigest()


def test_bad_charset_and_broken_base64_do_not_raise() -> None:
    raw = (
        b"From: b@example.net\nContent-Type: text/plain; charset=rot13\n"
        b"Content-Transfer-Encoding: base64\n\n!!!not base64@@@\n"
    )
    assert read_message(raw, recipients=(), envelope_sender=None).said in OUTCOMES


# ---------------------------------------------------------------- the two cuts


def _html_part(name: str) -> Message | None:
    msg = parse((CORPUS / name).read_bytes())
    return next((p for p in iter_parts(msg) if p.get_content_type() == "text/html"), None)


READ_FOR_COMMANDS = ("accept", "decline", "ambiguous", "no-command")
WITH_HTML = sorted(
    name
    for name, spec in EXPECTED.items()
    if spec["outcome"] in READ_FOR_COMMANDS and _html_part(name) is not None
)


@pytest.mark.parametrize("name", WITH_HTML)
def test_html_alternative_reads_the_same(name: str) -> None:
    """Where a reply carries HTML, it reads (signatures cut, then html2text and the cut) as the
    text part is read."""
    html = _html_part(name)
    assert html is not None
    subject = header_text(parse((CORPUS / name).read_bytes()), "Subject")
    verdict = judge(subject, new_lines(html_reply_text(decode_part(html))))
    assert verdict.outcome == EXPECTED[name]["outcome"]


def test_structural_cut_decides_when_the_library_disagrees() -> None:
    # mailparser_reply cuts at the first quote header, even a '>'-quoted one, and so
    # loses a reply written below an interleaved quote; the structural cut keeps it.
    body = "Hi,\n> On Mon, 23 Nov 2026, X <x@y> wrote:\n> To accept, reply\n\nAccept\n"
    assert library_reply(body) == "Hi,"
    reading = mail(body)
    assert reading.said == "accept"
    assert "mailparser_reply" in reading.reason


def test_signature_spans_cover_the_marked_elements_only() -> None:
    html = (
        '<div>Accept</div><div class="x gmail_signature"><div>Decline<br>to</div>'
        "<p>compromise</div></span><p>after</p>"
        '<blockquote><div id="x_Signature">Refuse</div></blockquote>'
    )
    cut = without_signatures(html, signature_spans(html))
    assert cut == "<div>Accept</div></span><p>after</p><blockquote></blockquote>"


def test_the_word_signature_in_text_marks_nothing() -> None:
    assert signature_spans("<p>Accept</p><p>The signature of the contract</p>") == []


def test_plain_alternative_is_cut_at_the_signatures_first_line() -> None:
    text = "Accept\n\nDecline to compromise\nACME\n\n> quoted\n"
    assert cut_plain_at(text, "Decline to compromise") == "Accept\n\n"
    assert first_signature_line("\n**--**\n  Decline to compromise  \n") == "Decline to compromise"
    assert cut_plain_at(text, "not there") == text


@pytest.mark.parametrize(
    "mark", ["Countersign request #12 (example.com)", "Demande Countersign n° 12"]
)
def test_either_languages_notice_mark_ends_the_new_text(mark: str) -> None:
    # A notice pasted without a quote header: nothing below its mark is the sender's.
    assert new_lines(f"Refuser\n\n{mark}\nAccepter\n") == ["Refuser"]
