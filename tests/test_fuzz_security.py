"""Fuzzing the parts of mail-in that guard secrets: the redaction before storing, the
reader after it, and the whole pipeline from bytes to the store (issue 12, Show 5).

Bounded: a few hundred generated messages in all, a few tens of seconds.  Every
input that ever broke something is a file in tests/fuzz/, replayed here on every
run (the corpus); the generated ones are mail a client could send, with a live
code put in every place and encoding a reply can carry it in.
"""

from __future__ import annotations

import base64
import contextlib
import email
import quopri
from datetime import datetime
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.policy import compat32
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import select

from countersign.gateway.mail_in.reading import OUTCOMES, read_message
from countersign.gateway.mail_in.sweep import InboundSettings, read_inbound
from countersign.store.db import Store
from countersign.store.models import InboxMessage
from countersign.workflow.codes import hash_of, normalize_code
from countersign.workflow.inbox import store_received
from countersign.workflow.inbox_batch import Received, process_due
from countersign.workflow.policy import Policy
from countersign.workflow.redaction import redact_message
from tests.conftest import T0
from tests.mail_helpers import codes, new_tech_request
from tests.test_reading_properties import HEADER_NAMES, header_value, mime_tree

CORPUS = sorted((Path(__file__).parent / "fuzz").glob("*.eml"))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIPELINE = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
DOMAIN = "countersign.localhost"
SEEDED = "K7QWJ3XR-M2PZ4TLA-VB6NYD5E-HC3GUF7S"  # the code the corpus files carry

# How a code is written where people and programs put it.
forms = st.sampled_from(
    [
        lambda c: c,
        lambda c: c.replace("-", ""),
        lambda c: c.lower(),
        lambda c: c.replace("-", " "),
        lambda c: f"http://127.0.0.1:8080/confirm/12?token={c}",
        lambda c: f"confirm+{c.replace('-', '')}@{DOMAIN}",
        lambda c: f"ACCEPT {c}",
        lambda c: f"> Your validation code: {c}",
    ]
)
# Drawn, not from `secrets`: a failure must replay.
live_codes = st.binary(min_size=20, max_size=20).map(
    lambda b: "-".join(base64.b32encode(b).decode()[i : i + 8] for i in range(0, 32, 8))
)
encodings = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable"])
filler = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)


def part(text: str, subtype: str, cte: str) -> Message:
    msg = EmailMessage()
    if cte in ("7bit", "8bit") and not text.isascii():
        cte = "8bit"
    msg.set_content(text, subtype=subtype, cte="7bit" if cte == "7bit" and text.isascii() else cte)
    return msg


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, list[str], str]:
    """A reply carrying a live code in a few places and encodings: (raw, recipients, code)."""
    code = draw(live_codes)
    lines = [
        draw(st.sampled_from(["Accept", "Decline", "Yes", "Thanks", ""])),
        *(draw(forms)(code) for _ in range(draw(st.integers(1, 3)))),
        draw(filler),
        "x" * draw(st.integers(0, 90)) + " " + code,  # quoted-printable breaks long lines
    ]
    text = "\n".join(lines)
    body = part(text, "plain", draw(encodings))
    if draw(st.booleans()):
        html = f"<p>{text.replace(chr(10), '<br>')}</p>"
        alternative = EmailMessage()
        alternative.make_alternative()
        alternative.set_boundary("=_fuzz")  # not email's random one: a failure must replay
        alternative.attach(body)
        alternative.attach(part(html, "html", draw(encodings)))
        body = alternative
    headers = draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=4))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    to = f"To: confirm+{code}@{DOMAIN}\r\n" if draw(st.booleans()) else ""
    raw = ("From: admin@example.com\r\n" + to + head).encode("utf-8", "surrogatepass")
    raw += body.as_bytes(policy=body.policy.clone(linesep="\r\n"))
    recipients = [f"confirm+{code.replace('-', '')}@{DOMAIN}"] if draw(st.booleans()) else []
    return raw, recipients, code


def readable_text(raw: bytes) -> bytes:
    """The message as bytes and as every part decoded: where a code could be read."""
    found = [raw]
    try:
        for leaf in email.message_from_bytes(raw, policy=compat32).walk():
            for value in leaf.values():
                with contextlib.suppress(Exception):
                    found.append(str(make_header(decode_header(str(value)))).encode())
            payload = leaf.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(payload)
    except Exception:  # what the library cannot take apart it cannot decode either
        pass
    return b"\n".join(found)


def code_forms(code: str) -> list[bytes]:
    canonical = normalize_code(code)
    assert canonical is not None
    return [f.encode() for f in {code, canonical, code.lower(), canonical.lower()}]


@FAST
@given(reply=replies())
def test_no_code_survives_redaction_in_any_encoding(reply: tuple[bytes, list[str], str]) -> None:
    raw, recipients, code = reply
    cleaned, addresses, hashes = redact_message(raw, recipients)
    readable = readable_text(cleaned) + "\n".join(addresses).encode()
    assert not [f for f in code_forms(code) if f in readable]
    note(repr(raw))
    assert hash_of(code) in hashes


@FAST
@given(reply=replies())
def test_the_reader_reads_a_redacted_message_as_the_original(
    reply: tuple[bytes, list[str], str],
) -> None:
    raw, recipients, code = reply
    cleaned, addresses, _ = redact_message(raw, recipients)
    before = read_message(raw, recipients=recipients, envelope_sender="bob@example.net")
    after = read_message(cleaned, recipients=addresses, envelope_sender="bob@example.net")
    assert after.said in OUTCOMES
    assert (after.said, after.sender) == (before.said, before.sender)
    known = hash_of(before.code) if before.code is not None else None
    now = hash_of(after.code) if after.code is not None else None
    # The same code, or the real one where the reader alone read a word before the
    # code as its first group ("xxxxxxxx ABCDEFGH-..."): redaction keeps codes whole.
    assert now in (known, hash_of(code)), (before.code, after.code)


@FAST
@given(raw=st.binary(max_size=4096), recipients=st.lists(st.text(max_size=80), max_size=3))
def test_redaction_never_raises_on_any_bytes(raw: bytes, recipients: list[str]) -> None:
    cleaned, addresses, hashes = redact_message(raw, recipients)
    assert isinstance(cleaned, bytes) and len(addresses) == len(recipients)
    assert all(len(h) == 64 for h in hashes)


@FAST
@given(tree=mime_tree, code=st.none() | live_codes)
def test_redaction_of_any_mime_tree_never_raises(tree: Message, code: str | None) -> None:
    raw = tree.as_bytes()
    if code is not None:
        raw += b"\r\nACCEPT " + code.encode() + b"\r\n"
    cleaned, _, _ = redact_message(raw, [])
    assert isinstance(cleaned, bytes)


@pytest.fixture
def live(world: Store, policy: Policy, t0: datetime) -> tuple[Store, str]:
    """One request waiting for both validators, and the admin's live code."""
    request_id = new_tech_request(world, policy, t0)
    return world, codes(world, request_id)["admin@example.com"]


def read(item: Received) -> object:
    return read_inbound(item, InboundSettings())


@PIPELINE
@given(reply=replies(), channel=st.sampled_from(["smtp", "imap"]))
def test_the_pipeline_stores_no_live_code_and_decides_as_the_reader_says(
    live: tuple[Store, str], policy: Policy, reply: tuple[bytes, list[str], str], channel: str
) -> None:
    store, real = live
    raw, recipients, fake = reply
    # The generated code replaced by the live one: the pipeline must act on it, not keep it.
    raw = raw.replace(fake.encode(), real.encode())
    raw = raw.replace(fake.replace("-", "").encode(), real.replace("-", "").encode())
    raw = raw.replace(fake.lower().encode(), real.lower().encode())
    raw = raw.replace(fake.replace("-", " ").encode(), real.replace("-", " ").encode())
    recipients = [r.replace(fake.replace("-", ""), real.replace("-", "")) for r in recipients]
    stored = store_received(
        store, raw, channel=channel, envelope_from="a@example.com", recipients=recipients, now=T0
    )
    assume(stored is not None)  # a Message-ID an earlier example already used
    while process_due(store, policy, read, T0):  # type: ignore[arg-type]
        pass
    with store.read() as session:
        row = session.scalar(select(InboxMessage).where(InboxMessage.id == stored))
        assert row is not None and row.status == "done", (row.status, row.outcome) if row else None
        at_rest = readable_text(bytes(row.raw)) + "\n".join(row.recipients or []).encode()
    if b"=\r\n" not in raw:  # (a soft line break may split a code the sender typed split)
        assert not [f for f in code_forms(real) if f in at_rest]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_the_corpus_goes_through_the_whole_pipeline(
    live: tuple[Store, str], policy: Policy, path: Path
) -> None:
    """Inputs that once broke something (or might): stored, read, done, never raised."""
    store, _ = live
    raw = path.read_bytes()
    cleaned, _, _ = redact_message(raw, [])
    reading = read_message(cleaned, recipients=[], envelope_sender=None)
    assert reading.said in OUTCOMES
    assert not [f for f in code_forms(SEEDED) if f in readable_text(cleaned)]
    store_received(store, raw, channel="smtp", envelope_from=None, recipients=[], now=T0)
    while process_due(store, policy, read, T0):  # type: ignore[arg-type]
        pass
    with store.read() as session:
        statuses = list(session.scalars(select(InboxMessage.status)))
    assert statuses == ["done"]


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 8


def test_qp_and_base64_helpers_agree() -> None:
    """The encodings the generator uses are the ones the redaction writes back."""
    text = b"ACCEPT AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD"
    assert quopri.decodestring(quopri.encodestring(text)) == text
    assert base64.b64decode(base64.encodebytes(text)) == text


def test_a_part_declaring_two_encodings_is_cleaned_under_each() -> None:
    """Found by the fuzzer: an empty Content-Transfer-Encoding, then base64. The library
    reads the first (so the text looked code-free), a client may read the last."""
    code = "AAAAAAAA-AAAAAAAA-AAAAAAAA-AAAAAAAA"
    body = base64.encodebytes(f"Accept\n{code}\n".encode())
    raw = (
        b"From: admin@example.com\r\nContent-Transfer-Encoding: \r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n'
        b"MIME-Version: 1.0\r\n\r\n" + body
    )
    cleaned, _, hashes = redact_message(raw, [])
    payload = cleaned.split(b"\r\n\r\n", 1)[1]
    assert code.encode() not in base64.b64decode(payload)
    assert hashes == [hash_of(code)]
