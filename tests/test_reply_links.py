"""Reply by one click: the confirm-request and reminder carry mailto: links that answer."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from countersign.gateway.mail_out.render import render_notice
from countersign.store.db import Store
from countersign.workflow.policy import Policy
from countersign.workflow.requests import show
from tests.mail_helpers import codes, new_tech_request
from tests.test_inbox import receive
from tests.test_render import all_lines, make_context, reads_as_command

REPLY = "confirm+ABCDEFGHIJKLMNOPQRSTUVWXYZ234567@countersign.localhost"


@pytest.mark.parametrize("kind", ["confirm-request", "reminder"])
@pytest.mark.parametrize(
    ("language", "words"), [("en", ("ACCEPT", "DECLINE")), ("fr", ("ACCEPTER", "REFUSER"))]
)
def test_mailto_links_answer_with_the_command_word_and_no_line_begins_with_one(
    kind: str, language: str, words: tuple[str, str]
) -> None:
    notice = render_notice(kind, language, make_context())
    links = re.findall(r'href="(mailto:[^"]+)"', notice.html)
    assert links == [f"mailto:{REPLY}?body={word}" for word in words]
    assert all(f"mailto:{REPLY}?body={word}" in notice.text for word in words)
    assert not [line for line in all_lines(notice) if reads_as_command(line)]


def mailto_answer(to: str, body: str, sender: str) -> bytes:
    """What a mail program sends from such a link: a fresh message, no quote, no subject."""
    return (
        f"From: <{sender}>\r\nTo: {to}\r\nSubject: \r\n"
        "Message-ID: <tap-1@mail.example.com>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    ).encode()


def test_the_mail_a_reply_to_decline_link_makes_declines(
    world: Store, policy: Policy, t0: datetime
) -> None:
    request_id = new_tech_request(world, policy, t0)
    code = codes(world, request_id)["admin@example.com"].replace("-", "")
    raw = mailto_answer(f"confirm+{code}@countersign.localhost", "DECLINE", "admin@example.com")
    assert receive(world, policy, raw, t0) == "declined"
    assert show(world, request_id)["state"] == "refused"
