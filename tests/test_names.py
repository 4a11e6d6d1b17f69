"""One check of names and addresses at every door (issue 12, Show 4).

Each bad value goes in through the command line (`account add`, `service
add`), an import file (`countersign import`) and the API (on a real uvicorn);
each door must refuse it, with the same reason.  Good values go in everywhere,
normalised the same way.  rules/names.py is the one check.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from countersign import daemon
from countersign.gateway.web.app import create_app
from countersign.rules import names
from countersign.rules.contacts import Refusal
from countersign.store.db import Store
from tests.cli_helpers import Cli, Db, Result, make_cli
from tests.web_support import KEY, free_port, running_server, web_config

HOLDER = "ok@example.com"
LONG_DOMAIN = "user@" + ("a" * 63 + ".") * 4 + "com"


@dataclass(frozen=True)
class Case:
    kind: str  # email, service, zone
    value: str
    why: str  # a part of the reason every door must give


BAD = [
    Case("email", "a\x1bb@example.com", "control characters"),
    Case("email", "bell\x07@example.com", "control characters"),
    Case("email", "tab\there@example.com", "control characters"),
    Case("email", "del\x7f@example.com", "control characters"),
    Case("email", "c1\x9b@example.com", "control characters"),
    Case("email", "user@exam\u200bple.com", "control characters"),  # zero-width space
    Case("email", "user@\u202eexample.com", "control characters"),  # right-to-left override
    Case("email", "user name@example.com", "spaces"),
    Case("email", "user@example.com.", "empty label"),
    Case("email", "user@example..com", "empty label"),
    Case("email", "x" * 10_000 + "@example.com", "longer than 64"),
    Case("email", "a" * 65 + "@example.com", "longer than 64"),
    Case("email", LONG_DOMAIN, "longer than 255"),
    Case("email", "user@" + "a" * 64 + ".com", "longer than 63"),
    Case("email", "no-at-sign.example.com", "one @"),
    Case("email", "@example.com", "one @"),
    Case("email", "user@", "one @"),
    Case("email", "two@@example.com", "second @"),
    Case("email", ".user@example.com", "dot out of place"),
    Case("email", "us..er@example.com", "dot out of place"),
    Case("email", "<script>@example.com", "character or a dot out of place"),
    Case("email", '"quoted"@example.com', "quoted"),
    Case("email", "user@[192.0.2.1]", "address literal"),
    Case("email", "user@-example.com", "inner hyphens"),
    Case("email", "user@exa_mple.com", "inner hyphens"),
    Case("email", "üser@example.com", "must be ASCII"),
    Case("email", "", "empty"),
    Case("service", "<script>alert(1)</script>", "letters, digits"),
    Case("service", "a/b.example", "letters, digits"),
    Case("service", "example.com.", "no empty label"),
    Case("service", "exa mple.com", "letters, digits"),
    Case("service", "ex\x1bample.com", "letters, digits"),
    Case("service", "bücher.example", "letters, digits"),
    Case("service", "x" * 254, "longer than 253"),
    Case("service", "", "empty"),
    Case("zone", "E U", "not a zone"),
    Case("zone", "EU1", "not a zone"),
    Case("zone", "\x1b[31mEU", "not a zone"),
    Case("zone", "X", "not a zone"),
]
GOOD = [
    Case("email", "Mixed.Case+tag@Example.COM", "mixed.case+tag@example.com"),
    Case("email", "user@bücher.example", "user@xn--bcher-kva.example"),
    Case("service", "VPS-123_a.example.net", "vps-123_a.example.net"),
    Case("zone", "ca", "CA"),
]


class InProcess:
    """The command line's own entry point, run in this process (a process each is slow)."""

    def __init__(
        self, cli: Cli, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.capsys = capsys
        for name, value in cli.env.items():
            if name.startswith("COUNTERSIGN_"):
                monkeypatch.setenv(name, value)
        monkeypatch.chdir(cli.cwd)

    def run(self, *args: str) -> Result:
        self.capsys.readouterr()
        try:
            daemon.main(list(args))
            code = 0
        except SystemExit as exit:
            code = int(exit.code or 0)
        out, err = self.capsys.readouterr()
        return Result(tuple(args), code, out, err)

    def run_all(self, calls: Iterable[Sequence[str]]) -> list[Result]:
        return [self.run(*args) for args in calls]


@pytest.fixture
def doors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[InProcess, Db, str, Path]]:
    real, db = make_cli(tmp_path)
    real.ok("account", "add", HOLDER, "--zone", "EU")  # the installed command, once
    cli = InProcess(real, capsys, monkeypatch)
    store = Store(db.url)
    app = create_app(store, web_config(tmp_path / "web"), health=lambda: True)
    with running_server(app, free_port()) as base:
        yield cli, db, base, tmp_path
    store.dispose()


def command_line(case: Case, n: int) -> list[str]:
    if case.kind == "service":
        return ["service", "add", case.value, *holders()]
    email, zone = (case.value, "EU") if case.kind == "email" else (f"z{n}@example.com", case.value)
    return ["account", "add", email, "--zone", zone]


def holders() -> list[str]:
    return ["--admin", HOLDER, "--tech", HOLDER, "--billing", HOLDER]


def import_line(case: Case, n: int) -> dict[str, str]:
    if case.kind == "service":
        return {"service": case.value, **dict.fromkeys(CONTACTS, HOLDER)}
    if case.kind == "email":
        return {"account": case.value, "zone": "EU"}
    return {"account": f"i{n}@example.com", "zone": case.value}


CONTACTS = ("contactAdmin", "contactTech", "contactBilling")


def api_call(client: httpx.Client, case: Case, n: int) -> httpx.Response:
    if case.kind == "service":
        body = {"serviceDomain": case.value, **dict.fromkeys(CONTACTS, HOLDER)}
        return client.post("/v1/service", json=body)
    if case.kind == "email":
        return client.post("/v1/account", json={"account": case.value, "zone": "EU"})
    return client.post("/v1/account", json={"account": f"a{n}@example.com", "zone": case.value})


def check(case: Case) -> str:
    """What rules/names.py says about the value: the reason every door must give."""
    checker = {"email": names.check_email, "service": names.check_service, "zone": names.check_zone}
    try:
        checker[case.kind](case.value)
    except Refusal as refusal:
        return names.printable(refusal.message)
    raise AssertionError(f"{case.value!r} was taken")


def test_the_same_bad_value_gets_the_same_refusal_at_every_door(
    doors: tuple[InProcess, Db, str, Path],
) -> None:
    cli, db, base, folder = doors
    reasons = [check(case) for case in BAD]
    for case, reason in zip(BAD, reasons, strict=True):
        assert case.why in reason, (case, reason)
    files = []
    for n, case in enumerate(BAD):
        path = folder / f"import-{n}.jsonl"
        path.write_text(json.dumps(import_line(case, n)) + "\n", encoding="utf-8")
        files.append(path)
    by_cli = cli.run_all(command_line(case, n) for n, case in enumerate(BAD))
    by_import = cli.run_all(["import", str(path)] for path in files)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as client:
        by_api = [api_call(client, case, n) for n, case in enumerate(BAD)]
    for case, reason, typed, imported, called in zip(
        BAD, reasons, by_cli, by_import, by_api, strict=True
    ):
        assert typed.code == 1 and typed.stderr_lines == [f"countersign: {reason}"], typed
        assert imported.code == 1, imported
        assert imported.stderr_lines == [f"countersign: line 1: {reason}; nothing was imported"]
        assert called.status_code == 400, (case, called.text)
        assert names.printable(called.json()["message"]) == reason
    # Nothing of any of them went in.
    assert db.count("accounts") == 1 and db.count("services") == 0
    assert len(BAD) >= 25


def test_good_values_go_in_everywhere_alike(doors: tuple[InProcess, Db, str, Path]) -> None:
    cli, db, base, folder = doors
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}) as client:
        for n, case in enumerate(GOOD):
            typed = cli.run(*command_line(case, n), "--json")
            assert typed.code == 0, typed
            typed_json = typed.json
            path = folder / f"good-{n}.jsonl"
            line = import_line(case, n)
            if case.kind == "email":
                line["account"] = "import." + case.value
            if case.kind == "service":
                line["service"] = "import." + case.value
            path.write_text(json.dumps(line) + "\n", encoding="utf-8")
            assert cli.run("import", str(path)).code == 0
            if case.kind == "email":
                # The same address through the API: already there, by its normal form.
                called = api_call(client, Case("email", case.value.upper(), ""), n)
                assert called.status_code == 409, called.text
                assert typed_json["account"] == case.why
            elif case.kind == "service":
                called = api_call(client, Case("service", "api." + case.value, ""), n)
                assert called.status_code == 201 and called.json()["serviceDomain"] == (
                    "api." + case.why
                )
                assert typed_json["serviceDomain"] == case.why
            else:
                called = api_call(client, case, n)
                assert called.status_code == 201 and called.json()["zone"] == case.why
                assert typed_json["zone"] == case.why
    emails = {row[0] for row in db.query("SELECT email FROM accounts")}
    assert {"mixed.case+tag@example.com", "import.user@xn--bcher-kva.example"} <= emails


def test_listings_never_print_control_characters(doors: tuple[InProcess, Db, str, Path]) -> None:
    """Rows written before this check (or by hand) are escaped on the way to a terminal."""
    cli, db, _, _ = doors
    import sqlite3

    connection = sqlite3.connect(db.path)
    connection.execute(
        "UPDATE accounts SET contact_email = ? WHERE email = ?",
        ("evil\x1b]0;pwned\x07\u202e@example.com", HOLDER),
    )
    connection.commit()
    connection.close()
    for args in (["account", "list"], ["account", "list", "--json"]):
        shown = cli.run(*args).stdout
        assert not any(names.unseen(ch) for ch in shown.replace("\n", ""))
        assert "evil" in shown
    listed = json.loads(cli.run("account", "list", "--json").stdout)
    assert listed[0]["contactEmail"] == "evil\x1b]0;pwned\x07\u202e@example.com"


def test_printable() -> None:
    assert names.printable("plain text") == "plain text"
    assert names.printable("a\x1b[31mb\u202ec") == "a\\x1b[31mb\\u202ec"
