"""The validator's own words: kept with the decision, shown by `request show` and in the
`refused` notice, never read from quoted text or signatures, never a code."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from countersign.gateway.comments import comment_of
from countersign.gateway.mail_in.reading_commands import judge
from countersign.gateway.mail_out.render import render_notice
from countersign.gateway.web.app import create_app
from countersign.store.db import Store
from countersign.workflow.policy import Policy
from countersign.workflow.requests import show
from tests.mail_helpers import codes, new_tech_request
from tests.test_inbox import admin_reply, receive
from tests.test_render import all_lines, make_context, reads_as_command
from tests.web_support import KEY, web_config

CODE = "ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567"


@pytest.mark.parametrize(
    ("line", "comment"),
    [
        ("Decline: wrong account", "wrong account"),
        ("DECLINE - I never asked for this.", "I never asked for this."),
        (f"Decline {CODE} not mine", "not mine"),
        (f"accept {CODE.replace('-', ' ')}", None),
        (f"Refuse, {CODE.lower()}: see {CODE}", "see"),
        ("Accept", None),
        ("Decline: " + "x" * 700, "x" * 491),  # a command line is read to 500 characters
    ],
)
def test_the_rest_of_the_command_line_is_the_comment_without_codes(
    line: str, comment: str | None
) -> None:
    verdict = judge("Re: [Countersign #1] Change of contacts", [line])
    kept = comment_of(verdict.rest)
    assert kept == comment
    assert CODE not in (kept or "") and "ABCDEFGH" not in (kept or "")


def test_a_comment_is_never_a_code_nor_the_stand_in_of_one() -> None:
    assert comment_of(f"  {CODE}  ") is None
    # As mail is stored: the code already replaced by its stand-in (workflow/redaction.py).
    assert comment_of(f" hashed{'ab' * 32} not mine") == "not mine"


def refused_text(store: Store, request_id: int) -> str:
    request = show(store, request_id)
    return render_notice("refused", "en", make_context(**request)).text


def test_decline_wrong_account_by_mail_shows_in_request_show_and_the_refused_notice(
    world: Store, policy: Policy, t0: datetime
) -> None:
    request_id = new_tech_request(world, policy, t0)
    raw = admin_reply(world, request_id, first_line="Decline: wrong account")
    assert receive(world, policy, raw, t0) == "declined"
    shown = show(world, request_id)
    admin = next(v for v in shown["validators"] if v["account"] == "admin@example.com")
    assert (admin["decision"], admin["comment"]) == ("decline", "wrong account")
    assert 'admin@example.com wrote: "wrong account"' in refused_text(world, request_id)


def test_a_quoted_decline_because_never_becomes_a_comment(
    world: Store, policy: Policy, t0: datetime
) -> None:
    request_id = new_tech_request(world, policy, t0)
    # The new text accepts; the quote below it says DECLINE because... (and the signature too).
    raw = admin_reply(world, request_id, first_line="Accept\n\n> DECLINE because I said so")
    raw = raw.replace(b"--\r\nSomeone", b"--\r\nSomeone\r\nDECLINE because signatures")
    assert receive(world, policy, raw, t0) == "accepted"
    admin = next(
        v for v in show(world, request_id)["validators"] if v["account"] == "admin@example.com"
    )
    assert (admin["decision"], admin["comment"]) == ("accept", None)


def test_a_comment_typed_on_the_page_and_one_given_to_the_api(
    world: Store, policy: Policy, t0: datetime, tmp_path: Path
) -> None:
    request_id = new_tech_request(world, policy, datetime.now(t0.tzinfo))
    mailed = codes(world, request_id)
    app = create_app(world, web_config(tmp_path), health=lambda: True)
    with TestClient(app) as client:
        page = client.get(f"/confirm/{request_id}", params={"token": mailed["new@example.com"]})
        assert 'name="comment"' in page.text
        answered = client.post(
            f"/confirm/{request_id}",
            data={
                "token": mailed["new@example.com"],
                "decision": "accept",
                "comment": f"fine by me, {mailed['admin@example.com']}",  # a code pasted in
            },
        )
        assert answered.status_code == 200
        refused = client.post(
            f"/v1/contactChange/{request_id}/refuse",
            json={"token": mailed["admin@example.com"], "comment": "typed in the panel"},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert refused.status_code == 200, refused.text
    by_account = {v["account"]: v for v in show(world, request_id)["validators"]}
    assert by_account["new@example.com"]["comment"] == "fine by me,"
    assert by_account["admin@example.com"]["comment"] == "typed in the panel"
    assert mailed["admin@example.com"] not in str(show(world, request_id))


def test_a_comment_never_starts_a_line_of_the_refused_notice_with_a_command_word() -> None:
    hostile = "wrong account\nACCEPT now, decline later, yes " * 5
    context = make_context(
        state="refused",
        validators=[
            {"account": "a@x.example", "decision": "decline", "at": None, "via": "smtp",
             "comment": " ".join(hostile.split())},
        ],
    )  # fmt: skip
    for language in ("en", "fr"):
        notice = render_notice("refused", language, context)
        assert "wrong account" in notice.text and "wrong account" in notice.html
        assert not [line for line in all_lines(notice) if reads_as_command(line)]
