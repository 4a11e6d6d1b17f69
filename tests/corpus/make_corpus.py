"""Write the reply corpus: tests/corpus/*.eml and tests/corpus/expected.json.

Run from the project root:  .venv/bin/python tests/corpus/make_corpus.py

The .eml files are plain RFC 5322 text, shaped after what the named clients
really send (header sets, quote styles, encodings). They are committed; this
script only exists so they can be regenerated or extended consistently.
"""

from __future__ import annotations

import base64
import json
import quopri
from collections.abc import Sequence
from email.header import Header
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ADDR_CODE = "K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S"  # the code in the reply address
LINE_CODE = "QX4LN7RA-ZT2MBW6E-PJ5KYC3D-GV7HSU4F"  # a code typed on the command line
DOMAIN = "countersign.localhost"
REPLY_ADDR = f"confirm+{ADDR_CODE}@{DOMAIN}"
FROM_US = f"Countersign <contacts@{DOMAIN}>"
BOB = "Bob Durand <bob@example.net>"
BOB_ADDR = "bob@example.net"
SUBJECT = "[Countersign #12] Change of contacts for example.com: your confirmation"
SUBJECT_FR = "[Countersign #12] Changement de contacts pour example.com : votre confirmation"
NOTICE_ID = "<20261123100203.12.a41f9c@countersign.localhost>"
DATE_SENT = "Mon, 23 Nov 2026 10:02:03 +0000"
SIG_SEP = "-- "  # the signature separator, trailing space included

NOTICE_EN = f"""Countersign request #12: change of contacts for example.com

Hello Bob Durand,

Alice Martin (alice@example.org) asks that Bob Durand (bob@example.net)
become the technical contact (contactTech) of example.com, in place of
Alice Martin.

Your personal validation code: {ADDR_CODE}

To accept, reply to this message with the word ACCEPT, or open:
http://127.0.0.1:8080/confirm/12?token={ADDR_CODE}

To decline, reply with DECLINE.

This request expires on 30 November 2026 at 10:02 UTC. If you did not
expect it, you may ignore this message or decline it.

{SIG_SEP}
Countersign, contact changes for your services
"""

NOTICE_FR = f"""Demande Countersign n° 12 (example.com)

Bonjour Bob Durand,

Alice Martin (alice@example.org) demande que Bob Durand (bob@example.net)
devienne le contact technique (contactTech) de example.com, à la place
d'Alice Martin.

Votre code de validation personnel : {ADDR_CODE}

Pour accepter, répondez à ce message avec le mot ACCEPT, ou ouvrez :
http://127.0.0.1:8080/confirm/12?token={ADDR_CODE}

Pour refuser, répondez DECLINE.

Cette demande expire le 30 novembre 2026 à 10:02 UTC.

{SIG_SEP}
Countersign, changements de contacts pour vos services
"""

GMAIL_ATTR = "On Mon, 23 Nov 2026 at 10:02, Countersign <\ncontacts@countersign.localhost> wrote:"
GMAIL_ATTR_FR = (
    "Le lun. 23 nov. 2026 à 10:02, Countersign <\ncontacts@countersign.localhost> a écrit :"
)
APPLE_ATTR = "On 23 Nov 2026, at 10:02, Countersign <contacts@countersign.localhost> wrote:"

cases: dict[str, dict[str, Any]] = {}


# ---------------------------------------------------------------- building blocks


def quote(text: str) -> str:
    return "\n".join(">" if not line.strip() else "> " + line for line in text.split("\n"))


def notice_html(text: str) -> str:
    paras = [p.replace("\n", "<br>\n") for p in text.strip().split("\n\n")]
    return "\n".join(f"<p>{p}</p>" for p in paras)


def outlook_block(lang: str = "en", rule: bool = False) -> str:
    head = {
        "en": (
            f"From: {FROM_US}\nSent: Monday, November 23, 2026 10:02 AM\n"
            f"To: {BOB}\nSubject: {SUBJECT}"
        ),
        "fr": (
            f"De : {FROM_US}\nEnvoyé : lundi 23 novembre 2026 10:02\n"
            f"À : {BOB}\nObjet : {SUBJECT_FR}"
        ),
        "de": (
            f"Von: {FROM_US}\nGesendet: Montag, 23. November 2026 10:02\n"
            f"An: {BOB}\nBetreff: {SUBJECT}"
        ),
    }[lang]
    return ("________________________________\n" if rule else "") + head


def encode_body(text: str, cte: str, charset: str) -> str:
    data = text.encode(charset)
    if cte == "quoted-printable":
        return quopri.encodestring(data).decode("ascii")
    if cte == "base64":
        return base64.encodebytes(data).decode("ascii")
    return data.decode(charset)


def part(
    body: str,
    ctype: str = "text/plain",
    charset: str = "utf-8",
    cte: str = "quoted-printable",
    params: str = "",
) -> str:
    return (
        f'Content-Type: {ctype}; charset="{charset}"{params}\n'
        f"Content-Transfer-Encoding: {cte}\n\n{encode_body(body, cte, charset)}"
    )


def multipart(subtype: str, parts: Sequence[str], boundary: str, params: str = "") -> str:
    inner = "".join(f"--{boundary}\n{p.rstrip(chr(10))}\n\n" for p in parts)
    return (
        f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}\n\n'
        f"{inner}--{boundary}--\n"
    )


def subject_header(subject: str) -> str:
    return Header(subject, "utf-8").encode() if not subject.isascii() else subject


def message(
    body: str,
    *,
    subject: str = "Re: " + SUBJECT,
    sender: str = BOB,
    to: str = REPLY_ADDR,
    msgid: str,
    date: str = "Mon, 23 Nov 2026 10:17:42 +0100",
    extra: Sequence[str] = (),
    reply: bool = True,
    crlf: bool = False,
    return_path: str | None = None,
) -> str:
    if return_path is None:
        return_path = sender.split("<")[-1].rstrip(">") if "<" in sender else sender
    lines = [
        f"Return-Path: <{return_path}>",
        f"Delivered-To: {to}",
        f"Received: from mail.example.net (mail.example.net [192.0.2.25])\n"
        f"\tby mx.countersign.localhost (Postfix) with ESMTPS id 4Hq3Lk0Zx9z1\n"
        f"\tfor <{to}>; {date}",
        f"Date: {date}",
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject_header(subject)}",
        f"Message-ID: {msgid}",
    ]
    if reply:
        lines += [f"In-Reply-To: {NOTICE_ID}", f"References: {NOTICE_ID}"]
    lines += [*extra, "MIME-Version: 1.0"]
    text = "\n".join(lines) + "\n" + body
    return text.replace("\n", "\r\n") if crlf else text


def case(
    name: str,
    outcome: str,
    raw: str,
    *,
    code: str | None = "address",
    recipients: Sequence[str] | None = None,
    envelope_sender: str | None = BOB_ADDR,
    note: str,
    **more: Any,
) -> None:
    assert name not in cases, name
    (HERE / f"{name}.eml").write_bytes(raw.encode("utf-8"))
    cases[f"{name}.eml"] = {
        "outcome": outcome,
        "code": code,
        "recipients": list(recipients) if recipients is not None else [REPLY_ADDR],
        "envelope_sender": envelope_sender,
        "note": note,
        **more,
    }


# ---------------------------------------------------------------- per client


def gmail(name: str, new_html: str, new_text: str, **kw: Any) -> str:
    text = f"{new_text}\n\n{GMAIL_ATTR}\n\n{quote(NOTICE_EN)}\n"
    html = (
        f'<div dir="ltr">{new_html}</div><br><div class="gmail_quote">'
        f'<div dir="ltr" class="gmail_attr">On Mon, 23 Nov 2026 at 10:02, Countersign &lt;'
        f'<a href="mailto:contacts@countersign.localhost">contacts@countersign.localhost</a>'
        f"&gt; wrote:<br></div>"
        f'<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
        f'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
        f"{notice_html(NOTICE_EN)}</blockquote></div>\n"
    )
    body = multipart(
        "alternative",
        [part(text, cte="7bit" if text.isascii() else "quoted-printable"), part(html, "text/html")],
        "000000000000b4c2a105f1e2d3c4",
    )
    return message(body, msgid=f"<CAKx1q2{name[:6]}+Zp9@mail.gmail.com>", **kw)


def outlook_desktop(new: str, lang: str = "en", **kw: Any) -> str:
    notice = NOTICE_FR if lang == "fr" else NOTICE_EN
    text = f"{new}\n\n{outlook_block(lang)}\n\n{notice}"
    html = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        '</head><body lang="EN-US"><div class="WordSection1">'
        f'<p class="MsoNormal">{new.replace(chr(10), "<br>")}<o:p></o:p></p>'
        '<div><div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm">'
        f'<p class="MsoNormal"><b>From:</b> Countersign &lt;contacts@{DOMAIN}&gt; <br>'
        "<b>Sent:</b> Monday, November 23, 2026 10:02 AM<br>"
        f"<b>To:</b> Bob Durand &lt;bob@example.net&gt;<br><b>Subject:</b> {SUBJECT}</p>"
        f"</div></div>{notice_html(notice)}</div></body></html>"
    )
    body = multipart(
        "alternative",
        [part(text), part(html, "text/html")],
        "_000_DB9PR03MB7241A0C1E2F3B4D5E6F7DB9PR03MB7241eurp_",
    )
    extra = [
        "Thread-Topic: " + SUBJECT,
        "Thread-Index: AQHa1b2c3d4e5f6g7h8i9j0kLmNoPqRsTuVw",
        "Accept-Language: en-US",
        "Content-Language: en-US",
        "X-MS-Has-Attach:",
        "X-MS-TNEF-Correlator:",
        "X-Mailer: Microsoft Outlook 16.0",
        *kw.pop("extra", ()),
    ]
    msgid = "<DB9PR03MB7241A0C1E2F3B4D5E6F7@DB9PR03MB7241.eurprd03.prod.outlook.com>"
    subject = kw.pop("subject", "RE: " + SUBJECT)
    return message(body, subject=subject, msgid=msgid, extra=extra, **kw)


def outlook_web(new: str, footer: str = "", **kw: Any) -> str:
    text = f"{new}\n\n{footer}{outlook_block(rule=True)}\n\n{NOTICE_EN}"
    html = (
        '<html><head><style type="text/css" style="display:none;"> P {margin-top:0;margin-bottom:0;}'
        '</style></head><body dir="ltr"><div style="font-family: Aptos, sans-serif;">'
        f"{new}</div>"
        + (f'<div id="ms-outlook-mobile-signature">{footer.strip()}</div>' if footer else "")
        + '<hr style="display:inline-block;width:98%" tabindex="-1"><div id="divRplyFwdMsg" dir="ltr">'
        f'<font face="Calibri, sans-serif" style="font-size:11pt"><b>From:</b> Countersign '
        f"&lt;contacts@{DOMAIN}&gt;<br><b>Sent:</b> Monday, 23 November 2026 10:02<br>"
        f"<b>To:</b> Bob Durand &lt;bob@example.net&gt;<br><b>Subject:</b> {SUBJECT}</font>"
        f"<div>&nbsp;</div></div><div>{notice_html(NOTICE_EN)}</div></body></html>"
    )
    body = multipart(
        "alternative",
        [part(text), part(html, "text/html")],
        "_000_AM0PR10MB3321B7C8D9E0F1A2B3C4AM0PR10MB3321EURP_",
    )
    msgid = "<AM0PR10MB3321B7C8D9E0F1A2B3C4@AM0PR10MB3321.EURPRD10.PROD.OUTLOOK.COM>"
    extra = ["Thread-Topic: " + SUBJECT, "Content-Language: en-GB", *kw.pop("extra", ())]
    subject = kw.pop("subject", "Re: " + SUBJECT)
    return message(body, subject=subject, msgid=msgid, extra=extra, **kw)


def apple(new: str, mobile: bool = False, **kw: Any) -> str:
    sig = "\n\nSent from my iPhone" if mobile else ""
    text = f"{new}{sig}\n\n> {APPLE_ATTR}\n> \n{quote(NOTICE_EN)}\n"
    if mobile:
        body = part(text, cte="quoted-printable")
        extra = ["X-Mailer: iPhone Mail (21F90)"]
    else:
        body = part(text, charset="us-ascii" if text.isascii() else "utf-8", cte="7bit")
        extra = ["X-Mailer: Apple Mail (2.3774.600.62)"]
    msgid = "<3F1E2D4C-5B6A-4798-8A9B-0C1D2E3F4A5B@example.net>"
    return message(body, msgid=msgid, extra=[*extra, *kw.pop("extra", ())], **kw)


def thunderbird(body_text: str, **kw: Any) -> str:
    body = part(body_text, cte="8bit", params="; format=flowed")
    msgid = "<8c2f7d1e-4a5b-6c7d-8e9f-0a1b2c3d4e5f@example.net>"
    extra = [
        "User-Agent: Mozilla Thunderbird",
        "Content-Language: en-US",
        *kw.pop("extra", ()),
    ]
    return message(body, msgid=msgid, extra=extra, **kw)


def plain(body_text: str, msgid: str, cte: str = "7bit", charset: str = "utf-8", **kw: Any) -> str:
    return message(part(body_text, cte=cte, charset=charset), msgid=msgid, **kw)


# ---------------------------------------------------------------- the cases


def clients() -> None:
    case(
        "gmail_top_accept",
        "accept",
        gmail("gta", "Accept", "Accept"),
        note="Gmail web, text+html, wrapped 'On ... wrote:' header, top-posted",
    )
    case(
        "gmail_top_decline",
        "decline",
        gmail("gtd", "Decline, I do not know this person.", "Decline, I do not know this person."),
        note="Gmail web, decline with an explanation on the same line",
    )
    case(
        "gmail_accept_with_code",
        "accept",
        gmail("gac", f"ACCEPT {LINE_CODE}", f"ACCEPT {LINE_CODE}"),
        code="line",
        note="code written on the command line wins over the address",
    )
    case(
        "gmail_code_in_groups_lower",
        "accept",
        gmail(
            "gcg",
            "accept " + LINE_CODE.lower().replace("-", " "),
            "accept " + LINE_CODE.lower().replace("-", " "),
        ),
        code="line",
        note="code typed in lowercase groups separated by spaces",
    )
    bottom = f"{GMAIL_ATTR}\n\n{quote(NOTICE_EN)}\n\nAccept\n\nBob\n"
    case(
        "gmail_bottom_posted",
        "accept",
        plain(bottom, "<CAKx1q2bottom+Zp9@mail.gmail.com>", cte="quoted-printable"),
        note="bottom-posted below the '>' quote, plain text only",
    )
    case(
        "outlook_desktop_accept",
        "accept",
        outlook_desktop("Accept\n\nBob Durand\nACME Hosting"),
        note="Outlook desktop, From:/Sent:/To:/Subject: block, notice quoted without '>'",
    )
    case(
        "outlook_desktop_decline_fr",
        "decline",
        outlook_desktop("Refuser, merci.\n\nBob", lang="fr", subject="TR: RE: " + SUBJECT_FR),
        note="Outlook desktop in French (De :/Envoyé :); TR: in subject ignored, body decides",
    )
    case(
        "outlook_web_accept",
        "accept",
        outlook_web("Accept"),
        note="Outlook on the web: underscore rule then From:/Sent: block",
    )
    case(
        "outlook_ios_accept",
        "accept",
        outlook_web("Approve", footer="Get Outlook for iOS<https://aka.ms/o0ukef>\n"),
        note="Outlook for iOS with its 'Get Outlook for iOS' footer",
    )
    case(
        "apple_mail_accept",
        "accept",
        apple("Accept."),
        note="Apple Mail, '>'-quoted attribution line",
    )
    case(
        "ios_mail_decline",
        "decline",
        apple("Decline", mobile=True),
        note="iOS Mail with 'Sent from my iPhone'",
    )
    case("ios_mail_yes", "accept", apple("Yes", mobile=True), note="YES alone on its line")
    android = (
        "Confirm\n\nOn Mon, 23 Nov 2026, 10:02 Countersign, <contacts@countersign.localhost> "
        f"wrote:\n\n{quote(NOTICE_EN)}\n"
    )
    case(
        "android_gmail_confirm",
        "accept",
        message(
            multipart(
                "alternative",
                [
                    part(android, cte="7bit"),
                    part(
                        f'<p dir="ltr">Confirm</p><br>'
                        f"<blockquote>{notice_html(NOTICE_EN)}"
                        "</blockquote>",
                        "text/html",
                    ),
                ],
                "00000000000091d3e605f1a2b3c4",
            ),
            msgid="<CAHd7x9android+Q@mail.gmail.com>",
        ),
        note="Gmail app on Android, attribution on one line",
    )
    tb = f"On 23/11/2026 10:02, Countersign wrote:\n{quote(NOTICE_EN)}\n\nDECLINE\n\n-- \nBob Durand\n"
    case(
        "thunderbird_bottom_decline",
        "decline",
        thunderbird(tb),
        note="Thunderbird, bottom-posted, format=flowed, own signature",
    )
    tb_top = f"accept.\n\nOn 11/23/26 10:02 AM, Countersign wrote:\n{quote(NOTICE_EN)}\n"
    case("thunderbird_top_accept", "accept", thunderbird(tb_top), note="Thunderbird top-posted")


def languages() -> None:
    fr = f"Accepter\n\n{GMAIL_ATTR_FR}\n\n{quote(NOTICE_FR)}\n"
    case(
        "gmail_fr_accepter",
        "accept",
        plain(
            fr,
            "<CAKx1q2fr+Zp9@mail.gmail.com>",
            cte="quoted-printable",
            subject="Re: " + SUBJECT_FR,
        ),
        note="French Gmail: wrapped 'Le ... a écrit :'",
    )
    case(
        "fr_oui",
        "accept",
        plain(
            f"Oui !\n\n{GMAIL_ATTR_FR}\n\n{quote(NOTICE_FR)}\n",
            "<CAKx1q2oui@mail.gmail.com>",
            cte="quoted-printable",
            subject="RE: " + SUBJECT_FR,
        ),
        note="OUI alone (punctuation ignored)",
    )
    case(
        "fr_non_merci",
        "no-command",
        plain(
            f"Non merci, pas pour l'instant.\n\n{GMAIL_ATTR_FR}\n\n{quote(NOTICE_FR)}\n",
            "<CAKx1q2nonmerci@mail.gmail.com>",
            cte="quoted-printable",
        ),
        note="NON not alone on its line is not a decline",
    )
    case(
        "fr_latin1_base64",
        "decline",
        plain(
            "Refuser\n\nCordialement,\nBérénice\n",
            "<latin1.b64@example.fr>",
            cte="base64",
            charset="iso-8859-1",
            sender="Bérénice Roy <berenice@example.fr>",
        ),
        envelope_sender="berenice@example.fr",
        note="ISO-8859-1 body in base64",
    )
    de = (
        "ACCEPT\n\nMit freundlichen Grüßen\nBob Durand\n\n"
        f"Am 23.11.2026 um 10:02 schrieb Countersign <contacts@countersign.localhost>:\n\n"
        f"{quote(NOTICE_EN)}\n"
    )
    case(
        "de_am_schrieb",
        "accept",
        thunderbird(de, subject="AW: " + SUBJECT),
        note="German 'Am ... schrieb ...:' quote header, AW: prefix",
    )
    de_outlook = outlook_desktop(
        "Reject\n\nMit freundlichen Grüßen\nBob", lang="de", subject="AW: " + SUBJECT
    )
    case(
        "de_outlook_von_gesendet",
        "decline",
        de_outlook,
        note="German Outlook block Von:/Gesendet:/An:/Betreff:",
    )


def grammar() -> None:
    msg = "<grammar.{0}@example.net>"

    def short(name: str, outcome: str, text: str, note: str, **kw: Any) -> None:
        case(
            name,
            outcome,
            plain(f"{text}\n\n{GMAIL_ATTR}\n\n{quote(NOTICE_EN)}\n", msg.format(name)),
            note=note,
            **kw,
        )

    short("yes_alone", "accept", "Yes", "YES alone")
    short(
        "yes_then_accept",
        "no-command",
        "YES accept",
        "YES counts only alone, and 'accept' is not the first word",
    )
    short("no_problem_thanks", "no-command", "No problem, thanks", "NO not alone")
    short("no_alone", "decline", "No.", "NO alone, punctuation ignored")
    short("accept_comma_thanks", "accept", "Accept, thanks", "'Accept, thanks'")
    short("bold_markdown_accept", "accept", "**ACCEPT**", "punctuation around the word")
    short(
        "i_accept",
        "no-command",
        "Hi,\n\nI accept.",
        "first word must be the command ('I accept' is not)",
    )
    short("accepted_word", "no-command", "Accepted", "ACCEPTED is not a command word")
    short(
        "reject_lower_code",
        "decline",
        "reject " + LINE_CODE.lower(),
        "lowercase code on the line",
        code="line",
    )
    short(
        "ambiguous_two_lines",
        "ambiguous",
        "Accept...\nHmm, wait.\nDecline, actually.",
        "both decisions in the new text",
    )
    short(
        "same_decision_twice",
        "accept",
        "Accept\n\nYes, accept.\nACCEPT",
        "the same decision repeated is fine",
    )
    chatter = "\n".join(f"Line {n} of a long preamble." for n in range(1, 11))
    short(
        "command_after_ten_lines",
        "no-command",
        chatter + "\nAccept",
        "only the first 10 non-blank new lines are read",
    )
    case(
        "disclaimer_mentions_words",
        "decline",
        plain(
            "Decline\n\nCONFIDENTIALITY NOTICE: this message is intended only for the named "
            "recipient. We accept no liability for its content and decline any\nresponsibility "
            "for changes made in transit.\n\n" + f"{GMAIL_ATTR}\n\n{quote(NOTICE_EN)}\n",
            msg.format("disclaimer"),
        ),
        note="legal disclaimer with accept/decline mid-line",
    )
    sig = (
        "Accept\n\n-- \nBob Durand | ACME Hosting\nDecline to compromise. Refuse to settle.\n"
        "This e-mail may be confidential; if you are not the addressee, you must not accept it.\n"
    )
    case(
        "signature_with_command_words",
        "accept",
        plain(sig, msg.format("sig")),
        note="signature after '-- ' whose lines begin with command words",
    )
    case(
        "quoted_rewrapped_no_reply",
        "no-command",
        plain(
            "Thanks for this, I will look at it tomorrow.\n\n"
            "> To accept, reply to this message with the word\n> ACCEPT, or open:\n"
            f"> http://127.0.0.1:8080/confirm/12?token={ADDR_CODE}\n>\n"
            "> To decline, reply with\nDECLINE.\n",
            msg.format("rewrap"),
        ),
        note="quote re-wrapped so ACCEPT starts a '>' line and DECLINE an unmarked glued line",
    )
    case(
        "notice_pasted_without_header",
        "accept",
        plain(f"Accept\n\n{NOTICE_EN}", msg.format("pasted")),
        note="notice copied below with no quote header: its opening mark ends the new text",
    )
    case(
        "notice_fr_pasted_without_header",
        "decline",
        plain(f"Refuser\n\n{NOTICE_FR}", msg.format("pasted-fr")),
        note="a French notice copied below with no quote header: its French mark ends it",
    )


def subjects() -> None:
    msg = "<subject.{0}@example.net>"
    case(
        "subject_only_accept",
        "accept",
        plain("", msg.format("only"), subject="ACCEPT"),
        note="empty body, command in Subject",
    )
    case(
        "subject_decline_before_tag",
        "decline",
        plain("\n", msg.format("tag"), subject="Decline - Re: " + SUBJECT),
        note="Subject command before our tag",
    )
    case(
        "subject_prefixes_accept",
        "accept",
        plain("Thanks.\n", msg.format("prefixes"), subject="RE: AW: Re: Réf: accept"),
        note="any number of Re:/RE:/AW:/Réf: prefixes stripped",
    )
    case(
        "subject_accept_body_decline",
        "ambiguous",
        plain("Decline\n", msg.format("mixed"), subject="Re: Accept"),
        note="Subject and body disagree",
    )
    case(
        "empty_reply",
        "no-command",
        plain(f"\n\n{GMAIL_ATTR}\n\n{quote(NOTICE_EN)}\n", msg.format("empty")),
        note="nothing written, only the quote",
    )
    fwd = (
        "Can you check whether this is legitimate?\n\n---------- Forwarded message ---------\n"
        f"From: {FROM_US}\nDate: Mon, 23 Nov 2026 at 10:02\nSubject: {SUBJECT}\nTo: {BOB}\n\n"
        f"{NOTICE_EN}"
    )
    case(
        "forwarded_question",
        "no-command",
        plain(
            fwd,
            msg.format("fwd"),
            subject="Fwd: " + SUBJECT,
            to="Alice <alice@example.org>",
            reply=False,
        ),
        code=None,
        recipients=["alice@example.org"],
        note="forwarded notice with a question: no command",
    )
    case(
        "forwarded_accept_subject",
        "no-command",
        plain(fwd, msg.format("fwd2"), subject="FW: Accept"),
        note="a forward's subject is never read as a command",
    )
    case(
        "code_from_to_header",
        "accept",
        plain("accept\n", msg.format("imap"), subject="Re: " + SUBJECT),
        recipients=[],
        envelope_sender=None,
        note="IMAP: no envelope, code taken from To/Delivered-To",
    )
    case(
        "wrong_domain_no_code",
        "accept",
        plain("Accept\n", msg.format("domain"), to=f"confirm+{ADDR_CODE}@evil.example"),
        recipients=[f"confirm+{ADDR_CODE}@evil.example"],
        code=None,
        note="+CODE at another domain is not ours",
    )
    case(
        "crlf_line_endings",
        "accept",
        plain("Accept\r\n", msg.format("crlf"), crlf=True),
        note="CRLF line endings throughout",
    )
    case(
        "auto_submitted_no",
        "accept",
        plain("Accept\n", msg.format("asno"), extra=["Auto-Submitted: no"]),
        note="Auto-Submitted: no is a person's mail",
    )
    case(
        "x_auto_response_suppress",
        "accept",
        outlook_desktop("Accept", extra=["X-Auto-Response-Suppress: All"]),
        note="Exchange's X-Auto-Response-Suppress alone is not automation",
    )
    html_only = message(
        part(
            '<html><body><div dir="ltr"><b>ACCEPT</b></div><br><div class="gmail_quote">'
            '<div class="gmail_attr">On Mon, 23 Nov 2026 at 10:02, Countersign wrote:<br></div>'
            f"<blockquote>{notice_html(NOTICE_EN)}</blockquote></div></body></html>\n",
            "text/html",
        ),
        msgid=msg.format("htmlonly"),
    )
    case("html_only_gmail_quote", "accept", html_only, note="HTML only, blockquote quote")
    owa_html = message(
        part(
            '<html><body><div>Decline</div><hr><div id="divRplyFwdMsg"><b>From:</b> Countersign '
            f"&lt;contacts@{DOMAIN}&gt;<br><b>Sent:</b> Monday, 23 November 2026 10:02<br>"
            f"<b>To:</b> bob@example.net<br><b>Subject:</b> {SUBJECT}</div>"
            f"<div>{notice_html(NOTICE_EN)}</div></body></html>\n",
            "text/html",
        ),
        msgid=msg.format("owahtml"),
    )
    case(
        "html_only_outlook_block",
        "decline",
        owa_html,
        note="HTML only, Outlook header block, unmarked copy of the notice",
    )
    case(
        "unknown_charset",
        "accept",
        plain("Accept\n", msg.format("charset"), charset="utf-8").replace(
            'charset="utf-8"', 'charset="x-no-such-charset"'
        ),
        note="unknown charset falls back to UTF-8",
    )


def machines() -> None:
    msg = "<auto.{0}@example.net>"
    ooo = (
        f"I am out of the office until 1 December with no access to email.\n\n{quote(NOTICE_EN)}\n"
    )
    case(
        "ooo_auto_submitted",
        "automated",
        plain(
            ooo,
            msg.format("as"),
            subject="Automatic reply: " + SUBJECT,
            extra=["Auto-Submitted: auto-replied", "X-Auto-Response-Suppress: All"],
        ),
        note="Outlook out-of-office quoting the notice",
    )
    case(
        "ooo_subject_only_en",
        "automated",
        plain("Accept\n\n" + ooo, msg.format("subj"), subject="Out of Office: " + SUBJECT),
        note="out-of-office subject alone suffices, even with a leading Accept",
    )
    case(
        "ooo_fr",
        "automated",
        plain(
            "Je suis absent jusqu'au 1er décembre.\n\n" + quote(NOTICE_FR),
            msg.format("fr"),
            subject="Réponse automatique : " + SUBJECT_FR,
            cte="quoted-printable",
        ),
        note="French out-of-office subject",
    )
    case(
        "ooo_de",
        "automated",
        plain(
            "Ich bin bis zum 1. Dezember nicht im Büro.\n",
            msg.format("de"),
            subject="Abwesenheitsnotiz: " + SUBJECT,
            cte="quoted-printable",
        ),
        note="German out-of-office subject",
    )
    case(
        "ooo_de_automatische_antwort",
        "automated",
        plain("Accept\n", msg.format("de2"), subject="Automatische Antwort: " + SUBJECT),
        note="German 'Automatische Antwort'",
    )
    case(
        "ooo_null_sender",
        "automated",
        plain(
            "I'm away.\n\n" + quote(NOTICE_EN),
            msg.format("null"),
            subject="Re: " + SUBJECT,
            extra=["X-Autoreply: yes"],
        ),
        envelope_sender="<>",
        note="RFC 3834 responder with a null envelope sender: not a bounce",
    )
    case(
        "precedence_bulk",
        "automated",
        plain("Accept\n", msg.format("bulk"), extra=["Precedence: bulk"]),
        note="Precedence: bulk",
    )
    case(
        "list_id",
        "automated",
        plain(
            "Accept\n",
            msg.format("list"),
            extra=[
                "List-Id: <hosting.lists.example.net>",
                "List-Unsubscribe: <mailto:leave@lists.example.net>",
            ],
        ),
        note="relayed through a mailing list",
    )
    case(
        "null_sender_accept",
        "automated",
        plain("Accept\n", msg.format("nullacc")),
        envelope_sender="",
        note="null envelope sender never commands",
    )
    dsn()
    exim()


def dsn() -> None:
    report = (
        "This is the mail system at host mx.example.net.\n\nI'm sorry to have to inform you "
        "that your message could not\nbe delivered to one or more recipients. It's attached "
        "below.\n\n<bob@example.net>: host mail.example.net[192.0.2.25] said: 550 5.1.1\n"
        "    <bob@example.net>: Recipient address rejected: User unknown\n"
    )
    status = (
        "Reporting-MTA: dns; mx.example.net\nX-Postfix-Queue-ID: 4Hq3Lk0Zx9z1\n"
        "Arrival-Date: Mon, 23 Nov 2026 10:02:04 +0000 (UTC)\n\n"
        "Final-Recipient: rfc822; bob@example.net\nOriginal-Recipient: rfc822;bob@example.net\n"
        "Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mail.example.net\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: "
        "User unknown\n"
    )
    original_headers = (
        f"Return-Path: <bounces@{DOMAIN}>\nFrom: {FROM_US}\nTo: {BOB}\nSubject: {SUBJECT}\n"
        f"Message-ID: {NOTICE_ID}\nDate: {DATE_SENT}\nAuto-Submitted: auto-generated\n"
        f"Reply-To: {REPLY_ADDR}\nX-Countersign-Request: 12\n"
        "X-Countersign-Kind: confirm-request\nMIME-Version: 1.0\n"
    )
    body = multipart(
        "report",
        [
            "Content-Description: Notification\nContent-Type: text/plain; charset=us-ascii\n\n"
            + report,
            "Content-Description: Delivery report\nContent-Type: message/delivery-status\n\n"
            + status,
            "Content-Description: Undelivered Message Headers\n"
            "Content-Type: text/rfc822-headers\n\n" + original_headers,
        ],
        "4Hq3Lk0Zx9z1.1700733724/mx.example.net",
        params="; report-type=delivery-status",
    )
    raw = message(
        body,
        subject="Undelivered Mail Returned to Sender",
        sender="MAILER-DAEMON@mx.example.net (Mail Delivery System)",
        return_path="",
        to=f"bounces@{DOMAIN}",
        msgid="<20261123100204.7E1A2B3C4D@mx.example.net>",
        extra=["Auto-Submitted: auto-replied"],
        reply=False,
    )
    expect = {
        "bounced_recipients": [BOB_ADDR],
        "bounced_request": 12,
        "bounced_kind": "confirm-request",
    }
    case(
        "dsn_bounce_headers",
        "bounce",
        raw,
        code=None,
        recipients=[f"bounces@{DOMAIN}"],
        envelope_sender="",
        note="Postfix DSN with text/rfc822-headers",
        **expect,
    )
    full = multipart(
        "report",
        [
            "Content-Type: text/plain; charset=us-ascii\n\n" + report,
            "Content-Type: message/delivery-status\n\n" + status,
            "Content-Type: message/rfc822\n\n"
            + original_headers
            + 'Content-Type: text/plain; charset="utf-8"\n\n'
            + NOTICE_EN,
        ],
        "=_dsn_boundary_2",
        params="; report-type=delivery-status",
    )
    raw2 = message(
        full,
        subject="Delivery Status Notification (Failure)",
        sender="Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        return_path="",
        to=f"bounces@{DOMAIN}",
        msgid="<5f1e2d3c.bounce@mx.google.com>",
        reply=False,
    )
    case(
        "dsn_bounce_full_original",
        "bounce",
        raw2,
        code=None,
        recipients=[f"bounces@{DOMAIN}"],
        envelope_sender="<>",
        note="DSN returning the full original (message/rfc822) that quotes ACCEPT",
        **expect,
    )


def exim() -> None:
    text = (
        "This message was created automatically by mail delivery software.\n\n"
        "A message that you sent could not be delivered to one or more of its\n"
        "recipients. This is a permanent error. The following address(es) failed:\n\n"
        "  bob@example.net\n    SMTP error from remote mail server after RCPT TO:<bob@example.net>:\n"
        "    550 5.1.1 User unknown\n\n------ This is a copy of the message, including all the "
        "headers. ------\n\n"
        f"From: {FROM_US}\nTo: {BOB}\nSubject: {SUBJECT}\nX-Countersign-Request: 12\n"
        f"X-Countersign-Kind: reminder\n\n{NOTICE_EN}"
    )
    raw = message(
        part(text, cte="8bit"),
        subject="Mail delivery failed: returning message to sender",
        sender="Mail Delivery System <Mailer-Daemon@mx.example.net>",
        to=f"bounces@{DOMAIN}",
        msgid="<E1tXyZ-0001Ab-2C@mx.example.net>",
        reply=False,
        return_path="",
        extra=["X-Failed-Recipients: bob@example.net", "Auto-Submitted: auto-replied"],
    )
    case(
        "exim_bounce_plain",
        "bounce",
        raw,
        code=None,
        recipients=[f"bounces@{DOMAIN}"],
        envelope_sender="",
        bounced_recipients=[BOB_ADDR],
        bounced_request=12,
        bounced_kind="reminder",
        note="Exim plain-text bounce, original quoted in the body",
    )


def broken() -> None:
    case(
        "malformed_no_headers",
        "malformed",
        "\x00\x01garbage that is not a message\n\nACCEPT\n",
        code=None,
        note="no header at all",
    )
    case(
        "broken_multipart",
        "no-command",
        message(
            'Content-Type: multipart/alternative; boundary="missing"\n\nAccept\n',
            msgid="<broken.mp@example.net>",
        ),
        note="multipart without its boundary: no readable text part",
    )


def html_reply(new_html: str, name: str, text: str | None = None, quoted: bool = True) -> str:
    """An HTML reply (with a plain alternative when `text` is given) quoting the notice."""
    quote_html = (
        f'<div class="gmail_quote"><div dir="ltr" class="gmail_attr">{GMAIL_ATTR}</div>'
        f"<blockquote>{notice_html(NOTICE_EN)}</blockquote></div>"
        if quoted
        else ""
    )
    html = f'<html><body><div dir="ltr">{new_html}</div>{quote_html}</body></html>\n'
    if text is None:
        body = part(html, "text/html")
    else:
        body = multipart(
            "alternative", [part(text), part(html, "text/html")], f"sig-{name}-boundary"
        )
    return message(body, msgid=f"<{name}@example.net>")


def signatures() -> None:
    """Signatures marked only by a client's markup, after the quote, and glued bottom-posts."""
    gmail_sig = '<div class="gmail_signature" data-smartmail="gmail_signature">{0}</div>'
    html_only = [
        (
            "html_gmail_signature_decline_words",
            "accept",
            "Accept<br><br>--<br>" + gmail_sig.format("Declined calls are returned within a day"),
            "HTML only: Gmail's signature div holds a line starting with DECLINE",
        ),
        (
            "html_gmail_signature_yes_alone",
            "no-command",
            "Thanks, I will check with my colleague.<br>" + gmail_sig.format("Yes<br>ACME Hosting"),
            "HTML only: a signature of YES alone on its line is no accept",
        ),
        (
            "html_outlook_signature_refuse",
            "accept",
            'Accept<div id="Signature"><p>Refuse nothing, deliver everything</p><p>Bob</p></div>',
            "HTML only: Outlook's id=Signature block, no '-- ' line",
        ),
        (
            "html_apple_signature_confirm",
            "decline",
            'Decline, I never asked for this.<div id="AppleMailSignature">'
            "Confirm your order at acme.example</div>",
            "HTML only: Apple Mail's AppleMailSignature block",
        ),
        (
            "html_thunderbird_moz_signature",
            "accept",
            'Accept<pre class="moz-signature" cols="72">Reject spam, not people.</pre>',
            "HTML only: Thunderbird's moz-signature pre",
        ),
        (
            "html_signature_unclosed",
            "decline",
            "Decline<div class='gmail_signature'><p>Approve your budget<p>ACME",
            "HTML only: a signature element never closed runs to the end",
        ),
    ]
    for name, outcome, new_html, note in html_only:
        case(
            name,
            outcome,
            html_reply(new_html, name, quoted=name != "html_signature_unclosed"),
            note=note,
        )
    multipart_sig = [
        (
            "multipart_gmail_signature_unmarked",
            "accept",
            "Accept\n\nDecline to compromise | ACME\n",
            "Accept" + gmail_sig.format("Decline to compromise | ACME"),
            "text+html: the plain part has no '-- '; the HTML marks the signature",
        ),
        (
            "multipart_outlook_signature_unmarked",
            "no-command",
            "Thanks, looking into it.\n\nConfirm nothing by phone.\nBob Durand\n",
            'Thanks, looking into it.<div id="Signature"><p>Confirm nothing by phone.</p>'
            "<p>Bob Durand</p></div>",
            "text+html from Outlook: its signature block starts with CONFIRM",
        ),
        (
            "multipart_apple_signature_unmarked",
            "decline",
            "Decline\n\nAccept our apologies for any delay\nBob\n",
            'Decline<div id="AppleMailSignature">Accept our apologies for any delay<br>Bob</div>',
            "text+html from Apple Mail: a signature line starting with ACCEPT",
        ),
    ]
    for name, outcome, text, new_html, note in multipart_sig:
        full_text = f"{text}\n{GMAIL_ATTR}\n\n{quote(NOTICE_EN)}\n"
        case(name, outcome, html_reply(new_html, name, text=full_text), note=note)
    after_quote = [
        (
            "signature_glued_after_quote",
            "accept",
            f"Accept\n\n{GMAIL_ATTR}\n{quote(NOTICE_EN)}\n{SIG_SEP}\nDecline nothing, ACME\n",
            "a '-- ' signature glued under the quoted original is never read",
        ),
        (
            "bare_dashes_glued_after_quote",
            "no-command",
            f"{GMAIL_ATTR}\n{quote(NOTICE_EN)}\n--\nReject spam, not people\n",
            "a bare '--' signature glued under the quote, no reply above it",
        ),
        (
            "signature_after_quote_blank",
            "no-command",
            f"Thanks, I will come back to you.\n\n{quote(NOTICE_EN)}\n\n{SIG_SEP}\nConfirmed partner\n",
            "a signature below the quote, a blank line between",
        ),
    ]
    for name, outcome, text, note in after_quote:
        case(name, outcome, plain(text, f"<{name}@example.net>"), note=note)
    stripped = NOTICE_EN.split(f"\n{SIG_SEP}\n")[0].rstrip()  # Thunderbird drops a quoted signature
    tb_attr = "On 23/11/2026 10:02, Countersign wrote:"
    tb_attr_fr = "Le 23/11/2026 à 10:02, Countersign a écrit :"
    stripped_fr = NOTICE_FR.split(f"\n{SIG_SEP}\n")[0].rstrip()
    glued = [
        (
            "thunderbird_bottom_glued_accept",
            "accept",
            f"{tb_attr}\n{quote(stripped)}\nAccept\n",
            "bottom-posted right under the quote, no blank line (Thunderbird)",
        ),
        (
            "thunderbird_bottom_glued_decline_fr",
            "decline",
            f"{tb_attr_fr}\n{quote(stripped_fr)}\nRefuser, je n'ai rien demandé\n",
            "French bottom-post glued under the quote",
        ),
        (
            "thunderbird_bottom_glued_then_signature",
            "accept",
            f"{tb_attr}\n{quote(stripped)}\nAccept\n\n{SIG_SEP}\nBob\nDecline to compromise\n",
            "glued bottom-post, then a signature with a command word",
        ),
        (
            "bottom_glued_under_quoted_signature",
            "accept",
            f"{tb_attr}\n{quote(NOTICE_EN.rstrip())}\nAccept\n",
            "glued under a quote that ends in the notice's own signature",
        ),
        (
            "bottom_glued_under_quoted_blank",
            "decline",
            f"{tb_attr}\n{quote(stripped)}\n>\nDecline\n",
            "glued under a blank quoted line",
        ),
    ]
    for name, outcome, text, note in glued:
        case(name, outcome, thunderbird_named(text, name), note=note)


def thunderbird_named(body_text: str, name: str) -> str:
    return message(
        part(body_text, cte="8bit", params="; format=flowed"),
        msgid=f"<{name}@example.net>",
        extra=["User-Agent: Mozilla Thunderbird", "Content-Language: en-US"],
    )


def main() -> None:
    for old in HERE.glob("*.eml"):
        old.unlink()
    clients()
    languages()
    grammar()
    subjects()
    machines()
    broken()
    signatures()
    (HERE / "expected.json").write_text(json.dumps(cases, indent=2, ensure_ascii=False) + "\n")
    print(f"{len(cases)} cases written")


if __name__ == "__main__":
    main()
