"""The command line, black box: a real `countersign` process, its exit status,
its stdout and stderr, and what it left in the store and the outbox."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.cli_helpers import Cli, Db, clean_env, free_port, make_cli, side_by_side

A, B, C, D = (f"{name}@example.org" for name in "abcd")


@pytest.fixture
def cli(tmp_path: Path) -> tuple[Cli, Db]:
    return make_cli(tmp_path)


@pytest.fixture
def seeded(cli: tuple[Cli, Db]) -> tuple[Cli, Db]:
    """a, b, c in EU, d in CA; example.com held by a for all three roles."""
    _, db = cli
    db.seed([A, B, C, (D, "CA")], [("example.com", A, A, A)])
    return cli


def stop(process: subprocess.Popen[str], timeout: float = 10) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        pytest.fail(f"serve did not stop within {timeout}s of SIGINT:\n{stderr}")
    return process.returncode, stderr


# --- the walkthrough ----------------------------------------------------------------


def test_walkthrough_from_an_empty_directory(tmp_path: Path) -> None:
    """Accounts, a service, a change, both codes from the 'mail', the daemon applies it."""
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    db = Db(tmp_path / "var" / "countersign.db")

    first = cli.json("account", "add", A, "--zone", "EU")  # makes the schema too
    assert first["account"] == A and first["zone"] == "EU"
    others = cli.run_all([("account", "add", e, "--zone", "EU", "--json") for e in (B, C, D)])
    assert [r.code for r in others] == [0, 0, 0], [str(r) for r in others]

    service = cli.json("service", "add", "example.com", "--admin", A, "--tech", A, "--billing", A)
    assert service["serviceDomain"] == "example.com"

    made = cli.json("change", "example.com", "--as", A, "--tech", B)
    assert len(made) == 1
    request = made[0]
    assert request["state"] == "validatingByCustomers"
    assert request["contactTypes"] == ["contactTech"]
    assert (request["fromAccount"], request["toAccount"], request["askingAccount"]) == (A, B, A)
    assert [v["account"] for v in request["validators"]] == [A, B]
    request_id = request["id"]

    codes = db.codes(request_id)
    assert set(codes) == {A, B} and codes[A] != codes[B]
    after_a = cli.json("accept", str(request_id), codes[A])
    assert after_a["state"] == "validatingByCustomers"
    after_b = cli.json("accept", str(request_id), codes[B])
    assert after_b["state"] in {"checkValidity", "doing", "done"}
    assert {v["account"]: (v["decision"], v["via"]) for v in after_b["validators"]} == {
        A: ("accept", "cli"),
        B: ("accept", "cli"),
    }

    daemon = cli.start(
        "serve",
        COUNTERSIGN_SCHEDULER_SWEEP_EVERY="1s",
        COUNTERSIGN_INBOUND_SMTP_PORT=str(free_port()),
        COUNTERSIGN_WEB_PORT=str(free_port()),
    )
    try:
        deadline = time.monotonic() + 15
        state = None
        while time.monotonic() < deadline:
            state = cli.json("requests")[0]["state"]
            if state == "done":
                break
            assert daemon.poll() is None, daemon.communicate()[1]
            time.sleep(0.2)
        assert state == "done", "the daemon did not apply the accepted request within 15 s"
    finally:
        code, log = stop(daemon)
    assert code == 0, log
    assert "Traceback" not in log, log

    held_b, held_a, listed = cli.run_all(
        [
            ("services", "--account", B, "--json"),
            ("services", "--account", A, "--json"),
            ("requests", "--json"),
        ]
    )
    assert held_b.json == [{"serviceDomain": "example.com", "contactTypes": ["contactTech"]}]
    assert held_a.json == [
        {"serviceDomain": "example.com", "contactTypes": ["contactAdmin", "contactBilling"]}
    ]
    [done] = listed.json
    assert done["id"] == request_id
    assert done["state"] == "done"
    assert done["dateDone"] is not None and done["dateDone"].endswith("Z")
    assert done["error"] is None

    mails = db.mails(request_id)
    assert ("completed", A) in mails and ("completed", B) in mails
    # a asked and validated, so it is told as a validator, not as the previous contact.
    assert not [m for m in mails if m[0] == "previous-contact-notice"]


# --- exit statuses and stderr -------------------------------------------------------


def test_exit_statuses_and_one_line_on_stderr(seeded: tuple[Cli, Db]) -> None:
    cli, db = seeded
    request_id = db.change("example.com", A, tech=B)
    cases = {
        # refused by a rule: c holds no role on example.com
        ("change", "example.com", "--as", C, "--tech", B): 1,
        ("accept", str(request_id), "NOT-A-CODE"): 1,
        ("frobnicate",): 2,
        ("account", "add", "x@example.org"): 2,  # no --zone
        ("request", "show", "one"): 2,
        # a value echoed back with a newline in it still makes one line
        ("services", "--account", "x@example.org\nSECOND LINE"): 1,
        ("change", "example.com", "--as", A): 2,  # no --admin/--tech/--billing
        ("requests", "--state", "finished"): 2,
        ("account", "add", "x@example.org", "--zone", "EU", "--language", "de"): 2,
        (): 2,  # a bare `countersign`
    }
    results = cli.run_all(list(cases))
    for result, expected in zip(results, cases.values(), strict=True):
        assert result.code == expected, str(result)
        assert len(result.stderr_lines) == 1, str(result)
        assert result.stderr_lines[0].startswith("countersign: "), str(result)
        assert "Traceback" not in result.stderr
        assert result.stdout == "", str(result)
    # Nothing was made by the refusals, and the pending request is untouched.
    assert db.count("requests") == 1
    assert db.count("accounts") == 4
    assert db.count("validators") == 2
    assert db.query("SELECT state FROM requests") == [("validatingByCustomers",)]
    refusal = results[0].stderr_lines[0]
    assert "not allowed" in refusal and C in refusal


def test_unusable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(blocker / "var")))
    line = cli.refused("account", "list")
    assert str(blocker) in line


def test_directory_commands_print_json(tmp_path: Path, cli: tuple[Cli, Db]) -> None:
    run, _ = cli
    source = tmp_path / "book.jsonl"
    source.write_text(
        '{"account": "e@example.org", "zone": "EU", "language": "fr"}\n'
        '{"service": "e.example", "contactAdmin": "e@example.org",'
        ' "contactTech": "e@example.org", "contactBilling": "e@example.org"}\n',
        encoding="utf-8",
    )
    added, imported = run.run_all(
        [
            ("account", "add", D, "--zone", "ca", "--no-payment-method", "--json"),
            ("import", str(source), "--json"),
        ]
    )
    assert added.code == 0, str(added)
    assert added.json == {
        "account": D,
        "contactEmail": D,
        "zone": "CA",
        "language": "en",
        "paymentMethodValid": False,
        "balanceDue": "0.00",
    }
    assert imported.json == {"accounts": 1, "services": 1}

    updated, service = run.run_all(
        [
            ("account", "update", D, "--contact-email", "Desk@Example.NET", "--json"),
            ("service", "add", "d.example", "--admin", D, "--tech", D, "--billing", D, "--json"),
        ]
    )
    assert updated.json["contactEmail"] == "desk@example.net"
    assert updated.json["account"] == D
    assert service.json == {
        "serviceDomain": "d.example",
        "contactAdmin": D,
        "contactTech": D,
        "contactBilling": D,
    }

    listed, held, human = run.run_all(
        [
            ("account", "list", "--json"),
            ("services", "--account", D, "--json"),
            ("account", "list"),
        ]
    )
    accounts = {a["account"]: a for a in listed.json}
    assert set(accounts) == {D, "e@example.org"}
    assert accounts[D]["contactEmail"] == "desk@example.net"  # where d's mail now goes
    assert accounts["e@example.org"]["language"] == "fr"
    assert held.json == [
        {
            "serviceDomain": "d.example",
            "contactTypes": ["contactAdmin", "contactTech", "contactBilling"],
        }
    ]
    assert "desk@example.net" in human.stdout


# --- behaviours a user notices ------------------------------------------------------


def test_resend_kills_the_old_code_and_the_new_one_works(seeded: tuple[Cli, Db]) -> None:
    cli, db = seeded
    request_id = db.change("example.com", A, tech=B)
    old = db.codes(request_id)

    resent = cli.json("resend", str(request_id))
    assert resent["id"] == request_id and resent["state"] == "validatingByCustomers"
    new = db.codes(request_id)
    assert new[A] != old[A] and new[B] != old[B]

    stale_a, stale_b = cli.run_all(
        [("accept", str(request_id), old[A]), ("accept", str(request_id), old[B])]
    )
    for stale in (stale_a, stale_b):
        assert stale.code == 1 and len(stale.stderr_lines) == 1, str(stale)
    accepted = cli.json("accept", str(request_id), new[A])
    assert {v["account"]: v["decision"] for v in accepted["validators"]} == {A: "accept", B: None}
    # A code works once: the same answer again is said to be done, another is refused.
    again = cli.ok("accept", str(request_id), new[A])
    assert again.stdout == f"already accepted by {A}; nothing changed\n"
    assert "already been used" in cli.refused("decline", str(request_id), new[A])
    shown = cli.json("request", "show", str(request_id))
    assert shown["validators"][0]["via"] == "cli" and shown["validators"][0]["at"]


def test_cancel_only_by_the_asking_account_and_codes_die(seeded: tuple[Cli, Db]) -> None:
    cli, db = seeded
    request_id = db.change("example.com", A, tech=B)
    codes = db.codes(request_id)

    line = cli.refused("cancel", str(request_id), "--as", B)
    assert A in line  # says who may cancel
    cancelled = cli.json("cancel", str(request_id), "--as", A.upper())
    assert cancelled["state"] == "aborted"
    assert cancelled["dateDone"] is not None  # when it ended

    dead = cli.run_all(
        [("accept", str(request_id), codes[B]), ("cancel", str(request_id), "--as", A)]
    )
    for result in dead:
        assert result.code == 1 and len(result.stderr_lines) == 1, str(result)
    assert db.query("SELECT state FROM requests") == [("aborted",)]
    assert [m for m in db.mails(request_id) if m[0] == "aborted"] == [
        ("aborted", A),
        ("aborted", B),
    ]


def test_decline_refuses_the_request(seeded: tuple[Cli, Db]) -> None:
    cli, db = seeded
    request_id = db.change("example.com", A, tech=B)
    codes = db.codes(request_id)

    declined = cli.json("decline", str(request_id), codes[B])
    assert declined["state"] == "refused"
    assert {v["account"]: v["decision"] for v in declined["validators"]} == {A: None, B: "decline"}
    assert cli.refused("accept", str(request_id), codes[A])
    assert sorted(m for m in db.mails(request_id) if m[0] == "refused") == [
        ("refused", A),
        ("refused", B),
    ]
    # The service kept its contacts.
    assert cli.json("services", "--account", B) == []


def test_requests_filters_by_account_and_state(seeded: tuple[Cli, Db]) -> None:
    cli, db = seeded
    db.seed([], [("other.example", C, C, C)])
    first = db.change("example.com", A, tech=B)
    second = db.change("other.example", C, billing=D.replace("d@", "b@"))  # c -> b billing
    db.cancel(second, C)

    by_b, by_c_open, aborted, every = cli.run_all(
        [
            ("requests", "--account", B, "--json"),
            ("requests", "--account", C, "--state", "validatingByCustomers", "--json"),
            ("requests", "--state", "aborted", "--json"),
            ("requests", "--json"),
        ]
    )
    assert [r["id"] for r in by_b.json] == [first, second]
    assert by_c_open.json == []
    assert [r["id"] for r in aborted.json] == [second]
    assert [(r["id"], r["state"]) for r in every.json] == [
        (first, "validatingByCustomers"),
        (second, "aborted"),
    ]


# --- configuration and the database -------------------------------------------------


def test_bad_config_file_is_a_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[mail]\ndomain = "example.net\n', encoding="utf-8")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('[mail]\ndomian = "example.net"\n', encoding="utf-8")
    bad_duration = tmp_path / "duration.toml"
    bad_duration.write_text('[requests]\nexpire_after = "a week"\n', encoding="utf-8")
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    results = cli.run_all(
        [
            ("--config", str(broken), "account", "list"),
            ("--config", str(unknown), "account", "list"),
            ("--config", str(bad_duration), "account", "list"),
            ("--config", str(tmp_path / "missing.toml"), "account", "list"),
        ]
    )
    for result in results:
        assert result.code == 2, str(result)
        assert len(result.stderr_lines) == 1, str(result)
    assert "broken.toml" in results[0].stderr
    assert "mail.domian" in results[1].stderr
    assert "requests.expire_after" in results[2].stderr
    assert "missing.toml" in results[3].stderr
    assert not (tmp_path / "var").exists()  # nothing was touched


def test_config_from_option_environment_and_working_directory(tmp_path: Path) -> None:
    """--config, COUNTERSIGN_CONFIG and ./countersign.toml each choose the data directory."""
    clis = {}
    for how in ("option", "env", "cwd"):
        folder = tmp_path / how
        folder.mkdir()
        config = folder / ("countersign.toml" if how == "cwd" else "settings.toml")
        config.write_text(f'data_dir = "{folder / "data"}"\n', encoding="utf-8")
        env = clean_env(COUNTERSIGN_CONFIG=str(config)) if how == "env" else clean_env()
        clis[how] = (Cli(folder, env), config)
    results = side_by_side(
        lambda: clis["option"][0].run(
            "--config", str(clis["option"][1]), "account", "add", A, "--zone", "EU"
        ),
        lambda: clis["env"][0].run("account", "add", B, "--zone", "EU"),
        lambda: clis["cwd"][0].run("account", "add", C, "--zone", "EU"),
    )
    assert [r.code for r in results] == [0, 0, 0], [str(r) for r in results]
    for how, email in (("option", A), ("env", B), ("cwd", C)):
        database = Db(tmp_path / how / "data" / "countersign.db")
        assert database.query("SELECT email FROM accounts") == [(email,)], how
        assert not (tmp_path / how / "var").exists(), how


def test_environment_beats_the_file(tmp_path: Path) -> None:
    config = tmp_path / "countersign.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-file"}"\n', encoding="utf-8")
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "from-env")))
    cli.ok("account", "add", A, "--zone", "EU")
    assert (tmp_path / "from-env" / "countersign.db").exists()
    assert not (tmp_path / "from-file").exists()


def test_fresh_directory_runs_without_any_config_and_db_upgrade_is_idempotent(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path, clean_env())
    listed = cli.run("account", "list", "--json")
    assert listed.code == 0, str(listed)
    assert listed.json == []
    assert (tmp_path / "var" / "countersign.db").exists()  # the default ./var
    for _ in range(2):
        upgraded = cli.ok("db", "upgrade")
        assert upgraded.stdout.strip(), "db upgrade says what it did"
        assert upgraded.stderr == ""


def test_config_is_taken_before_or_after_the_command(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env())
    (tmp_path / "other.toml").write_text('data_dir = "elsewhere"\n', encoding="utf-8")
    cli.ok("account", "add", "a@example.com", "--zone", "EU", "--config", "other.toml")
    for args in (
        ("account", "list", "--json", "--config", "other.toml"),
        ("account", "list", "--json", "--config=other.toml"),
        ("--config", "other.toml", "account", "list", "--json"),
    ):
        result = cli.run(*args)
        assert result.code == 0, str(result)
        assert [a["account"] for a in result.json] == ["a@example.com"]
    assert (tmp_path / "elsewhere" / "countersign.db").exists()
    assert not (tmp_path / "var").exists()
    missing = cli.run("account", "list", "--config")
    assert (missing.code, len(missing.stderr_lines)) == (2, 1)


def test_db_upgrade_prints_json(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env())
    first = cli.json("db", "upgrade")
    assert first["upgraded"] is True and first["previousRevision"] is None
    again = cli.json("db", "upgrade")
    assert again == {
        "revision": first["revision"],
        "previousRevision": first["revision"],
        "upgraded": False,
    }


def test_account_update_with_nothing_to_change_is_a_usage_error(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env())
    cli.ok("account", "add", "a@example.com", "--zone", "EU")
    nothing = cli.run("account", "update", "a@example.com")
    assert (nothing.code, len(nothing.stderr_lines)) == (2, 1)
    assert "Nothing to update" in nothing.stderr


def test_ids_out_of_range_are_unknown_never_a_traceback(cli: tuple[Cli, Db]) -> None:
    run, _ = cli
    huge = "99999999999999999999999"
    results = run.run_all(
        [
            ("request", "show", huge),
            ("accept", huge, "AAAAAAAA-BBBBBBBB-CCCCCCCC-DDDDDDDD"),
            ("resend", huge),
            ("cancel", huge, "--as", "a@example.com"),
            ("inbox", "retry", huge),
        ]
    )
    for result in results:
        assert result.code == 1 and len(result.stderr_lines) == 1, str(result)
        assert "unknown" in result.stderr_lines[0] and huge in result.stderr_lines[0]
