"""Bulk import from JSON Lines: all or nothing, a bad line named by its number.

``store`` is the suite's fixture (tests/conftest.py): SQLite, and PostgreSQL in CI.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from countersign.rules.contacts import Refusal
from countersign.store.db import Store
from countersign.store.models import Account, Event, Service
from countersign.workflow.directory import AccountChanges, add_account, list_accounts, services_of
from countersign.workflow.importer import import_lines
from tests.cli_helpers import make_cli


def account(email: str, zone: str = "EU", **extra: Any) -> str:
    return json.dumps({"account": email, "zone": zone, **extra})


def service(name: str, admin: str, tech: str | None = None, billing: str | None = None) -> str:
    return json.dumps(
        {
            "service": name,
            "contactAdmin": admin,
            "contactTech": tech or admin,
            "contactBilling": billing or admin,
        }
    )


GOOD = [
    account("a@example.org"),
    account(
        "B@Example.org",
        "ca",
        contactEmail="desk@example.net",
        language="fr",
        paymentMethodValid=False,
        balanceDue="12.5",
    ),
    "",
    "   ",
    account("c@example.org", balanceDue=3),
    service("example.com", "a@example.org", "c@example.org", "a@example.org"),
    service("Shop.Example", "b@example.org"),
]


def lines(*items: str) -> list[str]:
    return [item + "\n" for item in items]


def contents(store: Store) -> tuple[int, int, int]:
    """(accounts, services, audit events)."""
    with store.read() as session:
        return (
            session.scalar(select(func.count()).select_from(Account)) or 0,
            session.scalar(select(func.count()).select_from(Service)) or 0,
            session.scalar(select(func.count()).select_from(Event)) or 0,
        )


def test_good_file_imports_accounts_then_services(store: Store) -> None:
    assert import_lines(store, lines(*GOOD)) == {"accounts": 3, "services": 2}
    accounts = {a["account"]: a for a in list_accounts(store)}
    assert set(accounts) == {"a@example.org", "b@example.org", "c@example.org"}
    assert accounts["a@example.org"] == {
        "account": "a@example.org",
        "contactEmail": "a@example.org",
        "zone": "EU",
        "language": "en",
        "paymentMethodValid": True,
        "balanceDue": "0.00",
    }
    assert accounts["b@example.org"] == {
        "account": "b@example.org",
        "contactEmail": "desk@example.net",
        "zone": "CA",
        "language": "fr",
        "paymentMethodValid": False,
        "balanceDue": "12.50",
    }
    assert accounts["c@example.org"]["balanceDue"] == "3.00"
    assert services_of(store, "a@example.org") == [
        {"serviceDomain": "example.com", "contactTypes": ["contactAdmin", "contactBilling"]}
    ]
    assert services_of(store, "c@example.org") == [
        {"serviceDomain": "example.com", "contactTypes": ["contactTech"]}
    ]
    assert services_of(store, "b@example.org") == [
        {
            "serviceDomain": "shop.example",
            "contactTypes": ["contactAdmin", "contactTech", "contactBilling"],
        }
    ]


def test_services_may_name_accounts_already_in_the_store(store: Store) -> None:
    add_account(store, "old@example.org", AccountChanges(zone="EU", balance_due=Decimal(0)))
    counts = import_lines(
        store,
        lines(
            account("new@example.org"), service("x.example", "old@example.org", "new@example.org")
        ),
    )
    assert counts == {"accounts": 1, "services": 1}
    assert services_of(store, "old@example.org")[0]["contactTypes"] == [
        "contactAdmin",
        "contactBilling",
    ]


def test_bytes_lines_and_a_bom_are_fine(store: Store) -> None:
    data = ("\ufeff" + "\n".join(GOOD) + "\n").encode("utf-8")
    assert import_lines(store, data.splitlines(keepends=True)) == {"accounts": 3, "services": 2}


def test_empty_file_imports_nothing(store: Store) -> None:
    assert import_lines(store, ["\n", ""]) == {"accounts": 0, "services": 0}


BAD_LINES: dict[str, tuple[Any, ...]] = {
    "not JSON": ("{'account': 'x@example.org'}", "not JSON"),
    "truncated JSON": ('{"account": "x@example.org", "zone": "EU"', "not JSON"),
    "not an object": ('["x@example.org", "EU"]', "object"),
    "neither kind": ('{"email": "x@example.org"}', "account"),
    "missing zone": ('{"account": "x@example.org"}', "zone"),
    "bad zone": (account("x@example.org", "Europe!"), "zone"),
    "bad email": (account("not-an-address"), "not-an-address"),
    "unknown field": (account("x@example.org", colour="blue"), "colour"),
    "number as email": ('{"account": 5, "zone": "EU"}', "account"),
    "number as contact email": (account("x@example.org", contactEmail=5), "contactEmail"),
    "null language": (account("x@example.org", language=None), "language"),
    "bad language": (account("x@example.org", language="de"), "language"),
    "negative balance": (account("x@example.org", balanceDue="-1"), "balance"),
    "balance not a number": (account("x@example.org", balanceDue="lots"), "lots"),
    "balance as bool": (account("x@example.org", balanceDue=True), "balanceDue"),
    "payment flag as text": (
        account("x@example.org", paymentMethodValid="yes"),
        "paymentMethodValid",
    ),
    "service missing a contact": (
        '{"service": "y.example", "contactAdmin": "a@example.org"}',
        "contact",
    ),
    "service naming an unknown account": (
        service("y.example", "nobody@example.org"),
        "nobody@example.org",
    ),
    "service with a space": (service("my site", "a@example.org"), "my site"),
    "duplicate account in the file": (account("a@example.org"), "a@example.org"),
    # A duplicate is reported where it appears the second time: GOOD[5], line 6.
    "duplicate service in the file": (service("example.com", "a@example.org"), "example.com", 6),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_named_and_nothing_is_imported(store: Store, case: str) -> None:
    bad, words, *where = BAD_LINES[case]
    line = where[0] if where else 4
    # Good lines around the bad one (line 4, after a blank line 3): none of them may stay.
    text = lines(GOOD[0], GOOD[1], "", bad, GOOD[4], GOOD[5])
    before = contents(store)
    with pytest.raises(Refusal) as refused:
        import_lines(store, text)
    message = refused.value.message
    assert message.startswith(f"line {line}: "), message
    assert words in message, message
    assert "nothing was imported" in message
    assert "\n" not in message
    assert contents(store) == before


def test_existing_account_or_service_is_named_with_its_line(store: Store) -> None:
    import_lines(store, lines(account("a@example.org"), service("example.com", "a@example.org")))
    before = contents(store)

    with pytest.raises(Refusal) as refused:
        import_lines(store, lines(account("new@example.org"), "", account("A@example.org")))
    assert refused.value.message.startswith("line 3: account already exists: a@example.org")

    with pytest.raises(Refusal) as refused:
        import_lines(
            store,
            lines(
                account("new@example.org"),
                service("new.example", "new@example.org"),
                service("Example.com", "a@example.org"),
            ),
        )
    assert refused.value.message.startswith("line 3: service already exists: example.com")
    assert contents(store) == before
    assert [a["account"] for a in list_accounts(store)] == ["a@example.org"]


def test_every_bad_line_is_counted(store: Store) -> None:
    with pytest.raises(Refusal) as refused:
        import_lines(store, lines("nope", account("ok@example.org"), "{", '{"account": "x"}'))
    message = refused.value.message
    assert message.startswith("line 1: not JSON"), message
    assert "(and 2 more)" in message


def test_bad_utf8_is_named_with_its_line(store: Store) -> None:
    data = [account("a@example.org").encode() + b"\n", b'{"account": "\xff@example.org"}\n']
    with pytest.raises(Refusal, match=r"^line 2: not UTF-8"):
        import_lines(store, data)
    assert contents(store) == (0, 0, 0)


# --- through the command line -----------------------------------------------------


def test_import_command(tmp_path: Path) -> None:
    cli, db = make_cli(tmp_path)
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(GOOD) + "\n", encoding="utf-8")
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        (account("d@example.org") + "\n" + service("d.example", "d@example.org") + "\n").encode()
        + b'{"account": "e@example.org", "zone": "EU", "language": "fr\xe9"}\n'
    )
    imported, refused, missing = cli.run_all(
        [
            ("import", str(good), "--json"),
            ("import", str(bad), "--json"),
            ("import", str(tmp_path / "missing.jsonl")),
        ]
    )
    assert imported.code == 0, str(imported)
    assert imported.json == {"accounts": 3, "services": 2}

    assert refused.code == 1, str(refused)
    assert refused.stdout == ""
    [line] = refused.stderr_lines
    assert line.startswith("countersign: line 3: not UTF-8"), line
    assert line.endswith("nothing was imported"), line

    assert missing.code == 2, str(missing)
    assert len(missing.stderr_lines) == 1 and "missing.jsonl" in missing.stderr

    assert db.count("accounts") == 3  # the good file only
    assert db.query("SELECT domain FROM services ORDER BY domain") == [
        ("example.com",),
        ("shop.example",),
    ]
    again = cli.run("import", str(good))
    assert again.code == 1
    assert again.stderr_lines == [
        "countersign: line 1: account already exists: a@example.org; nothing was imported"
    ]
    assert db.count("accounts") == 3
