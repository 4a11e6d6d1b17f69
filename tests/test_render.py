"""Notices render in every kind and language, and no line of them reads as a command."""

from __future__ import annotations

import copy
import html
import re
import unicodedata
from typing import Any

import html2text
import jinja2
import pytest

from countersign.gateway.mail_out.render import (
    KINDS,
    RenderedNotice,
    notice_language,
    render_notice,
)
from countersign.gateway.marks import NOTICE_MARKS, SUBJECT_PREFIX

LANGUAGES = ("en", "fr")
CODE = "ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567"
LINK = f"http://127.0.0.1:8080/confirm/42?token={CODE}"

# The reply reader's command words (docs: "Mail in").
COMMAND_WORDS = {
    "ACCEPT", "DECLINE", "APPROVE", "CONFIRM", "REFUSE", "REJECT",
    "ACCEPTER", "REFUSER", "YES", "NO", "OUI", "NON",
}  # fmt: skip


def make_context(**request_changes: Any) -> dict[str, Any]:
    request = {
        "id": 42,
        "serviceDomain": "example.com",
        "contactTypes": ["contactAdmin", "contactTech"],
        "fromAccount": "alice@example.com",
        "toAccount": "bob@example.org",
        "askingAccount": "alice@example.com",
        "state": "validatingByCustomers",
        "dateRequest": "2026-03-07T10:00:00Z",
        "dateDone": "2026-03-08T11:05:00+00:00",
        "expires": "2026-03-14T11:00:00+01:00",
        "error": None,
        "validators": [
            {
                "account": "alice@example.com",
                "decision": "accept",
                "at": "2026-03-07T10:01:00Z",
                "via": "web",
            },
            {"account": "bob@example.org", "decision": None, "at": None, "via": None},
        ],
    }
    request.update(request_changes)
    return {
        "request": request,
        "recipient": {"email": "alice@example.com", "language": "en"},
        "code": CODE,
        "link": LINK,
        "reply_address": "confirm+ABCDEFGHIJKLMNOPQRSTUVWXYZ234567@countersign.localhost",
        "reason": "This code has already been used.",
        "public_url": "http://127.0.0.1:8080",
    }


def hostile_context() -> dict[str, Any]:
    """Every value a customer could choose tries to start a line or inject markup."""
    evil = "\r\nACCEPT\nBcc: x@evil\u2028yes\x85DECLINE\x0bno\x0cOUI <script>alert(1)</script>"
    return make_context(
        serviceDomain="evil.example" + evil,
        fromAccount="decline@evil.example" + evil,
        toAccount="accept@evil.example",
        askingAccount="\n> CONFIRM " + evil,
        expires="ACCEPT\n2026",
        dateDone="\nREFUSER",
        error="REJECT" + evil,
        validators=[
            {"account": "yes@evil" + evil, "decision": "decline", "at": None, "via": "smtp"},
            {"account": "\nno", "decision": None, "at": None, "via": None},
        ],
    ) | {"reason": "ACCEPT\r\nDECLINE" + evil}


def first_word(line: str) -> str:
    """The word a reply reader would take as the command of `line`.

    Leading whitespace, quote markers, punctuation and any "Re:"/"Fwd:" go first.
    """
    rest = line
    while True:
        stripped = re.sub(r"^[\W_]+", "", rest)
        stripped = re.sub(r"^(?:re|fwd?|fw|tr|aw|sv)\s*:", "", stripped, flags=re.IGNORECASE)
        if stripped == rest:
            break
        rest = stripped
    match = re.match(r"[^\W_]+", rest)  # letters and digits, as the reader splits words
    return match.group(0) if match else ""


def reads_as_command(line: str) -> bool:
    # Accents are dropped: a reader that folds them would take "Refusé" for REFUSE.
    word = unicodedata.normalize("NFKD", first_word(line))
    word = "".join(c for c in word if not unicodedata.combining(c)).upper()
    return word in COMMAND_WORDS


def html_as_text(body: str, width: int) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = width
    return converter.handle(body)


def html_source_lines(body: str) -> list[str]:
    """The HTML line by line with tags dropped: how a naive reader would see it."""
    return [html.unescape(re.sub(r"<[^>]*>", "", line)) for line in body.splitlines()]


def all_lines(notice: RenderedNotice) -> list[str]:
    # The reply reader drops our [Countersign #ID] tag before reading a Subject.
    untagged = re.sub(r"^\[Countersign #\d+\]\s*", "", notice.subject)
    lines = [notice.subject, "Re: " + notice.subject, "Fwd: Re: " + notice.subject, untagged]
    lines += notice.text.splitlines()
    lines += html_source_lines(notice.html)
    for width in (0, *range(20, 121)):  # any word of a paragraph may start a line
        lines += html_as_text(notice.html, width).splitlines()
    return lines


# The sign-in link belongs to no request: it has no request's mark (see its own test).
REQUEST_KINDS = sorted(KINDS - {"sign-in"})


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_sign_in_notice_holds_its_link_and_no_request(language: str) -> None:
    context = make_context() | {"request": None, "link": "http://x/account/sign-in/T0K3N"}
    notice = render_notice("sign-in", language, context | {"valid_minutes": 15})
    assert notice.subject.startswith("[Countersign] ")
    assert "http://x/account/sign-in/T0K3N" in notice.text
    assert 'href="http://x/account/sign-in/T0K3N"' in notice.html
    assert "15 minutes" in notice.text and "alice@example.com" in notice.text
    assert (
        not any(mark in notice.text for mark in NOTICE_MARKS.values())
        and "example.com:" not in notice.subject
    )
    evil = {"email": "x@evil\nACCEPT <script>alert(1)</script>", "language": language}
    hostile = render_notice("sign-in", language, context | {"recipient": evil})
    assert "<script>" not in hostile.html and "&lt;script&gt;" in hostile.html
    assert not [line for line in all_lines(hostile) if reads_as_command(line)]


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", REQUEST_KINDS)
def test_every_kind_renders_with_mark_first(kind: str, language: str) -> None:
    notice = render_notice(kind, language, make_context())
    assert notice.subject.startswith(SUBJECT_PREFIX.format(request_id=42) + " ")
    assert len(notice.subject) > len("[Countersign #42] ") + 10
    mark = f"{NOTICE_MARKS[language]}42"
    assert notice.text.splitlines()[0].startswith(mark)
    assert any(line.startswith(mark) for line in notice.html.splitlines()[:12])
    converted = [line for line in html_as_text(notice.html, 0).splitlines() if line.strip()]
    assert converted[0].startswith(mark)
    assert "example.com" in notice.text and "example.com" in notice.html
    assert "\n\n\n" not in notice.text


@pytest.mark.parametrize("kind", REQUEST_KINDS)
def test_a_french_notice_opens_in_french(kind: str) -> None:
    first = render_notice(kind, "fr", make_context()).text.splitlines()[0]
    assert first.startswith("Demande Countersign n° 42")
    assert "request" not in first


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_no_line_begins_with_a_command_word(kind: str, language: str) -> None:
    notice = render_notice(kind, language, hostile_context())
    offending = [line for line in all_lines(notice) if reads_as_command(line)]
    assert offending == []


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", REQUEST_KINDS)
def test_hostile_values_stay_on_their_line_and_escaped(kind: str, language: str) -> None:
    notice = render_notice(kind, language, hostile_context())
    assert "\r" not in notice.subject and "\n" not in notice.subject
    assert "<script>" not in notice.html
    assert "&lt;script&gt;" in notice.html
    assert not any(line.lstrip().startswith("Bcc:") for line in notice.text.splitlines())
    assert "\u2028" not in notice.text and "\x85" not in notice.text


def test_the_first_word_helper_catches_what_it_should() -> None:
    assert reads_as_command("Re: ACCEPT")
    assert reads_as_command("> > decline@evil.example, thanks")
    assert reads_as_command("  **Refusé par :** x")
    assert not reads_as_command("Declined by: x")
    assert not reads_as_command("Nothing has changed.")
    assert not reads_as_command("Countersign request #1")


def test_command_words_appear_mid_sentence_in_confirm_request() -> None:
    text = render_notice("confirm-request", "en", make_context()).text
    assert "with ACCEPT or DECLINE" in text
    french = render_notice("confirm-request", "fr", make_context()).text
    assert "avec ACCEPTER ou REFUSER" in french


def test_missing_key_is_an_error_not_a_blank() -> None:
    context = make_context()
    del context["request"]["serviceDomain"]
    with pytest.raises(jinja2.UndefinedError):
        render_notice("completed", "en", context)
    context = make_context()
    del context["code"]
    with pytest.raises(jinja2.UndefinedError):
        render_notice("confirm-request", "en", context)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        render_notice("surprise", "en", make_context())


def test_unknown_contact_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown contact type"):
        render_notice("completed", "en", make_context(contactTypes=["contactTech", "\nACCEPT"]))


def test_language_choice_and_fallback() -> None:
    french = render_notice("completed", "fr", make_context())
    assert "Bonjour" in french.text and "contact administrateur" in french.text
    assert 'lang="fr"' in french.html
    for other in ("de", "", "xx-YY"):
        notice = render_notice("completed", other, make_context())
        assert "Hello" in notice.text and "administrative contact" in notice.text
    assert notice_language("fr-CA") == "fr"
    assert notice_language("FR") == "fr"
    assert notice_language("de") == "en"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", ["confirm-request", "reminder"])
def test_code_and_link_in_confirm_and_reminder(kind: str, language: str) -> None:
    notice = render_notice(kind, language, make_context())
    for body in (notice.text, notice.html):
        assert CODE in body
        assert LINK in body
    assert f'href="{LINK}"' in notice.html
    assert "confirm+ABCDEFGHIJKLMNOPQRSTUVWXYZ234567@countersign.localhost" in notice.text


def test_reminder_says_new_code_replaces_earlier() -> None:
    assert "have stopped working" in render_notice("reminder", "en", make_context()).text
    assert "ne fonctionnent plus" in render_notice("reminder", "fr", make_context()).text


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", ("administrative contact and technical contact", "14 March 2026 at 10:00 UTC")),
        ("fr", ("contact administrateur et contact technique", "14 mars 2026 à 10:00 UTC")),
    ],
)
def test_contact_types_and_dates_in_plain_words(language: str, expected: tuple[str, str]) -> None:
    notice = render_notice("confirm-request", language, make_context())
    for body in (notice.text, notice.html):
        assert expected[0] in body
        assert expected[1] in body  # 11:00+01:00 shown in UTC
    assert "contactAdmin" not in notice.text


def test_billing_contact_words() -> None:
    context = make_context(contactTypes=["contactBilling"])
    assert "billing contact" in render_notice("completed", "en", context).text
    assert "contact de facturation" in render_notice("completed", "fr", context).text


def test_waiting_and_declining_accounts_are_named() -> None:
    waiting = render_notice("accepted-waiting", "en", make_context())
    assert "waits for the answer of bob@example.org" in waiting.text
    declined = make_context()
    declined["request"]["validators"][1]["decision"] = "decline"
    refused = render_notice("refused", "en", declined)
    assert "declined by bob@example.org" in refused.text
    assert "bob@example.org" in refused.html


def test_previous_contact_notice_names_who_now_holds_the_role() -> None:
    context = make_context(contactTypes=["contactTech"])
    text = render_notice("previous-contact-notice", "en", context).text
    assert "no longer the technical contact of example.com" in text
    assert "requested by alice@example.com, bob@example.org now holds this role" in text


def test_error_and_command_result_show_the_reason() -> None:
    context = make_context(
        state="error", error="The new billing contact has no valid payment method."
    )
    context["reason"] = None
    assert "no valid payment method" in render_notice("error", "en", context).text
    result = render_notice("command-result", "en", make_context())
    assert "This code has already been used." in result.text
    assert "newest" in result.text
    closed = render_notice("command-result", "en", make_context(state="done"))
    assert "closed to answers" in closed.text


@pytest.mark.parametrize("kind", ["text", "html"])
def test_a_french_error_notice_gives_the_rule_s_reason_in_french(kind: str) -> None:
    english = "the new billing contact bob@example.org has no valid payment method"
    context = make_context(state="error", error=english)
    context.update(reason=english, reason_code="no-payment-method")
    notice = render_notice("error", "fr", context)
    body = html.unescape(getattr(notice, kind))
    assert "le nouveau contact de facturation n'a pas de moyen de paiement valide" in body
    assert english not in body
    assert english in render_notice("error", "en", context).text  # English keeps the detail
    # What the system of record said is its own words, given as they came.
    context.update(reason="registry refused", reason_code="apply-refused")
    refused = html.unescape(getattr(render_notice("error", "fr", context), kind))
    assert "le système de référence a refusé le changement : registry refused" in refused
    # A notice queued before reason codes were kept still reads.
    del context["reason_code"]
    assert "registry refused" in render_notice("error", "fr", context).text


def test_missing_dates_are_left_out() -> None:
    context = make_context(expires=None, dateDone=None)
    assert "Expires" not in render_notice("confirm-request", "en", context).text
    assert "Done on" not in render_notice("completed", "en", context).text


def test_context_is_not_modified() -> None:
    context = hostile_context()
    before = copy.deepcopy(context)
    render_notice("confirm-request", "en", context)
    assert context == before


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("reason_code", ["ambiguous", "no-command", "no-code", "used", None])
def test_command_result_advice_fits_the_reason(language: str, reason_code: str | None) -> None:
    context = make_context() | {"reason_code": reason_code}
    notice = render_notice("command-result", language, context)
    how_to_reply = {"en": "the word ACCEPT", "fr": "le mot ACCEPTER"}[language]
    explains = reason_code in ("ambiguous", "no-command", "no-code")
    assert (how_to_reply in notice.text) is explains
    assert (how_to_reply in notice.html) is explains
    assert [line for line in all_lines(notice) if reads_as_command(line)] == []
