"""Properties of the reply reader on inputs nobody would write by hand.

Time is bounded through hypothesis deadlines: an example that runs longer
than its deadline fails the test (and hypothesis re-runs it to be sure it is
not a one-off hiccup).
"""

from __future__ import annotations

import base64
import email
from email.message import Message

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mailparser_reply import EmailReplyParser

from countersign.gateway.mail_in.reading import OUTCOMES, Reading, read_message
from countersign.gateway.mail_in.reading_quotes import LIBRARY_LINE, LIBRARY_LINES, library_reply

RECIPIENTS = ("confirm+K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S@countersign.localhost",)
FUZZ = settings(max_examples=200, deadline=500, suppress_health_check=[HealthCheck.too_slow])

# Words and line shapes the reader reacts to, so that random mail often reaches every branch.
LINE_PIECES = [
    "Accept",
    "DECLINE",
    "yes",
    "No",
    "No problem, thanks",
    "approve",
    "refuser",
    "oui",
    "> Accept",
    ">> decline",
    "On Mon, 23 Nov 2026 at 10:02, Countersign <",
    "c@d> wrote:",
    "Le lun. 23 nov. 2026 à 10:02, X a écrit :",
    "Am 23.11.2026 um 10:02 schrieb X:",
    "From: Countersign <contacts@countersign.localhost>",
    "Sent: Monday",
    "De : x",
    "Envoyé : y",
    "-- ",
    "Sent from my iPhone",
    "Countersign request #12",
    "________________________________",
    "-----Original Message-----",
    "K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S",
    "X-Countersign-Request: 12",
    "Final-Recipient: rfc822; bob@example.net",
    "Action: failed",
    "Status: 5.1.1",
    "",
]
HEADER_NAMES = [
    "From",
    "To",
    "Subject",
    "Message-ID",
    "Auto-Submitted",
    "Precedence",
    "Return-Path",
    "Delivered-To",
    "List-Id",
    "X-Autoreply",
    "Sender",
    "Content-Transfer-Encoding",
]
CONTENT_TYPES = [
    "text/plain",
    "text/html",
    "application/octet-stream",
    "message/delivery-status",
    "text/rfc822-headers",
    "message/rfc822",
    "image/png",
    "text/x-weird",
]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-uuencode", "bogus"]
CHARSETS = ["utf-8", "iso-8859-1", "us-ascii", "utf-16", "x-no-such", "rot13", ""]

header_value = st.text(
    alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=80
) | st.sampled_from([*LINE_PIECES, "auto-replied", "no", "bulk", "<>", "=?utf-8?b?QWNjZXB0?="])
body_lines = st.lists(st.sampled_from(LINE_PIECES) | st.text(max_size=40), max_size=30)


def assert_reading(reading: Reading) -> None:
    event(reading.said)  # shown by --hypothesis-show-statistics: are all branches reached?
    assert isinstance(reading, Reading)
    assert reading.said in OUTCOMES
    assert reading.message_id
    assert reading.reason
    if reading.said != "bounce":
        assert reading.bounced_recipients == ()


def read(raw: bytes, envelope_sender: str | None = "bob@example.net") -> Reading:
    return read_message(raw, recipients=RECIPIENTS, envelope_sender=envelope_sender)


@FUZZ
@given(st.binary(max_size=8192), st.sampled_from([None, "", "<>", "bob@example.net"]))
def test_arbitrary_bytes_never_raise(raw: bytes, envelope_sender: str | None) -> None:
    assert_reading(read(raw, envelope_sender))


@FUZZ
@given(
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=12),
    body_lines,
    st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_header_soup_never_raises(
    headers: list[tuple[str, str]], lines: list[str], newline: str
) -> None:
    head = "".join(f"{name}: {value}{newline}" for name, value in headers)
    raw = (head + newline + newline.join(lines)).encode("utf-8", "surrogatepass")
    assert_reading(read(raw))


def _leaf(ctype: str, cte: str, charset: str, body: bytes) -> Message:
    part = Message()
    part["Content-Type"] = f'{ctype}; charset="{charset}"' if charset else ctype
    part["Content-Transfer-Encoding"] = cte
    if ctype.startswith("message/"):
        # The generator wants message/* parts to hold parsed messages, as the parser makes them.
        part.set_payload([email.message_from_bytes(body)])
        return part
    if cte == "base64":
        body = base64.encodebytes(body)
    # Surrogate escapes make the generator write these bytes back unchanged.
    part.set_payload(body.decode("ascii", "surrogateescape"))
    return part


def _branch(subtype: str, children: list[Message]) -> Message:
    part = Message()
    part["Content-Type"] = f'multipart/{subtype}; boundary="=_b{id(part)}"'
    payload: list[Message | str] = list(children)
    part.set_payload(payload)
    return part


leaf_body = body_lines.map(lambda lines: "\n".join(lines).encode()) | st.binary(max_size=400)
mime_tree = st.recursive(
    st.builds(
        _leaf,
        st.sampled_from(CONTENT_TYPES),
        st.sampled_from(ENCODINGS),
        st.sampled_from(CHARSETS),
        leaf_body,
    ),
    lambda children: st.builds(
        _branch,
        st.sampled_from(["mixed", "alternative", "report", "related", "signed"]),
        st.lists(children, min_size=0, max_size=4),
    ),
    max_leaves=12,
)


@FUZZ
@given(
    mime_tree,
    st.lists(st.tuples(st.sampled_from(HEADER_NAMES[:10]), header_value), max_size=8),
    st.sampled_from([None, "", "<>", "bob@example.net"]),
)
def test_arbitrary_mime_trees_never_raise(
    tree: Message, headers: list[tuple[str, str]], envelope_sender: str | None
) -> None:
    # Top headers are written by hand: raw 8-bit values are what some senders really send.
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    raw = head.encode("utf-8", "surrogatepass") + tree.as_bytes()
    assert_reading(read(raw, envelope_sender))


def _reply(body: str, subject: str = "Re: [Countersign #12] Change of contacts") -> bytes:
    encoded = base64.encodebytes(body.encode("utf-8", "surrogatepass")).decode("ascii")
    return (
        "From: Bob <bob@example.net>\nTo: confirm@countersign.localhost\n"
        f"Subject: {subject}\nMessage-ID: <p@example.net>\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" + encoded
    ).encode("ascii")


quoted_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=600)


def _quote(text: str) -> str:
    lines = text.replace("\r", "\n").split("\n")
    return "\n".join("> " + line for line in lines)


@FUZZ
@given(st.sampled_from(["Accept", "Decline", "Yes", "No", "Hello"]), quoted_text)
def test_quoted_text_never_counts(top: str, quoted: str) -> None:
    """Whatever a '>' quote holds, the reading is that of the line above it."""
    expected = read(_reply(top + "\n")).said
    attribution = (
        "On Mon, 23 Nov 2026 at 10:02, Countersign <\ncontacts@countersign.localhost> wrote:"
    )
    raw = _reply(f"{top}\n\n{attribution}\n\n{_quote(quoted)}\n")
    assert read(raw).said == expected


@FUZZ
@given(body_lines, quoted_text)
def test_appending_a_quote_changes_nothing(lines: list[str], quoted: str) -> None:
    body = "\n".join(line.replace("\r", " ") for line in lines)
    before = read(_reply(body + "\n"))
    after = read(_reply(f"{body}\n\nOn Mon, 23 Nov 2026, X <x@y> wrote:\n\n{_quote(quoted)}\n"))
    assert (after.said, after.code) == (before.said, before.code)


@FUZZ
@given(body_lines)
def test_automated_mail_never_commands(lines: list[str]) -> None:
    raw = _reply("\n".join(lines)).replace(
        b"\nContent-Type", b"\nAuto-Submitted: auto-replied\nContent-Type"
    )
    assert read(raw).said == "automated"


# Lines that make mailparser_reply's header patterns match, half match or read far ahead.
LIBRARY_PIECES = [
    *LINE_PIECES,
    "On",
    "On .",
    "wrote:",
    "Am x",
    "schrieb y:",
    "Le x",
    "a écrit :",
    "To: bob",
    "Subject:",
    "> From: a",
    "> Sent: b",
    "Von: v",
    "An:",
    "  : x",
    "_" * 33,
    "-" * 32,
    "x" + "_" * 35,
    ">",
]


def _whole_head_reply(text: str) -> str | None:
    """What library_reply gave when it always handed the library its whole head."""
    head = "\n".join(x[:LIBRARY_LINE] for x in text.split("\n", LIBRARY_LINES)[:LIBRARY_LINES])
    try:
        reply = EmailReplyParser(languages=["en", "fr", "de"]).parse_reply(head)
    except Exception:
        return None
    return reply if isinstance(reply, str) else None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(LIBRARY_PIECES) | st.text(max_size=40), min_size=8, max_size=60))
def test_library_short_head_reads_as_the_whole_head(lines: list[str]) -> None:
    """library_reply gives the library a short head when it can: never with another result."""
    text = "\n".join(lines)
    assert library_reply(text) == _whole_head_reply(text)


PATHOLOGICAL = [
    b"On " * 300 + b"\n",
    b"Am Am schrieb " * 70 + b"\n",
    b"x" * 990 + b" wrote:\n",
    b"From: x\nTo: y\n",
    b"> " * 400 + b"\n",
    b"\n",
    b" " * 999 + b"\n",
    b"Accept " + b"A" * 900 + b"\n",
    b"ACCEPT " + b"ABCDEFG2 " * 100 + b"\n",
    b"<blockquote>" * 50,
    b"=?utf-8?q?" + b"=41" * 300 + b"?= ",
]


@settings(max_examples=40, deadline=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(PATHOLOGICAL),
    st.integers(min_value=1, max_value=4000),
    st.sampled_from([b"text/plain", b"text/html"]),
    st.sampled_from([b"bob@example.net", b"MAILER-DAEMON@example.net"]),
    st.sampled_from(["bob@example.net", "<>"]),
)
def test_pathological_inputs_stay_fast(
    piece: bytes, count: int, ctype: bytes, sender: bytes, envelope_sender: str
) -> None:
    """Long lines and many lines of what the regexes look for, with and without the bounce path."""
    body = piece * count
    raw = (
        b"From: "
        + sender
        + b"\nSubject: "
        + piece[:2000].replace(b"\n", b" ")
        + b"\nContent-Type: "
        + ctype
        + b"; charset=utf-8\n\n"
        + body
    )
    assert_reading(read(raw, envelope_sender))
