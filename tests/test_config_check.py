"""`config check`, `config show`, `--version`: every bad value is one line naming the key,
where its value came from (file and line, or the variable) and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from countersign.config import inspect_config
from tests.cli_helpers import Cli, clean_env


@pytest.fixture(autouse=True)
def _empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


# (file text, environment, key named, words of the problem, where the value came from)
BAD = [
    ("[inbound]\nsmtp_port = 99999\n", {}, "inbound.smtp_port", "1 to 65535", ":2"),
    ("", {"COUNTERSIGN_WEB_PORT": "0"}, "web.port", "1 to 65535", "COUNTERSIGN_WEB_PORT"),
    ("[outbound]\nsmtp_port = -25\n", {}, "outbound.smtp_port", "1 to 65535", ":2"),
    ("[web]\nmetrics_port = 70000\n", {}, "web.metrics_port", "1 to 65535", ":2"),
    ("[inbound]\nmax_bytes = -1\n", {}, "inbound.max_bytes", "more than 0", ":2"),
    ('[requests]\nexpire_after = "0s"\n', {}, "requests.expire_after", "longer than 0s", ":2"),
    ("", {"COUNTERSIGN_SHUTDOWN_GRACE": "soon"}, "shutdown_grace", "not a duration", "env"),
    (
        '[requests]\nexpire_after = "3d"\nremind_after = ["1d", "4d"]\n',
        {},
        "requests.remind_after",
        "not before requests.expire_after",
        ":3",
    ),
    ('[mail]\npublic_url = "ftp://x.example"\n', {}, "mail.public_url", "http", ":2"),
    ("", {"COUNTERSIGN_MAIL_PUBLIC_URL": "example.com"}, "mail.public_url", "http", "env"),
    ('[mail]\ndomain = "not a domain"\n', {}, "mail.domain", "domain name", ":2"),
    ('[database]\nurl = "mysql://u:pw@db/cs"\n', {}, "database.url", "not supported", ":2"),
    (
        "",
        {"COUNTERSIGN_DATABASE_URL": "postgresql+nodriver://h/x"},
        "database.url",
        "driver",
        "env",
    ),
    ("[mail]\ndomian = 'x.example'\n", {}, "mail.domian", "unknown configuration key", ":2"),
    (
        "",
        {"COUNTERSIGN_INBOUND_SMTP_PROT": "25"},
        "COUNTERSIGN_INBOUND_SMTP_PROT",
        "unknown",
        "env",
    ),
    ("[smtp]\nport = 25\n", {}, "smtp", "unknown configuration key", ":1"),
    ('[inbound]\nimap_tls = "maybe"\n', {}, "inbound.imap_tls", "true or false", ":2"),
    ("", {"COUNTERSIGN_WEB_PORT": "80a"}, "web.port", "whole number", "COUNTERSIGN_WEB_PORT"),
    ("", {"COUNTERSIGN_API_KEYS": "{not json"}, "api.keys", "JSON", "COUNTERSIGN_API_KEYS"),
    ("[api]\nkeys = { crm = '' }\n", {}, "api.keys", "non-empty", ":2"),
    ('[mail]\nreply_local = "a+b"\n', {}, "mail.reply_local", "local part", ":2"),
    ('retention = "-3d"\n', {}, "retention", "not a duration", ":1"),
    ('mail = "x"\n', {}, "mail", "[mail] table", ":1"),
    ("[web]\nmetrics_port = 8080\n", {}, "web.metrics_port", "also web.port's", ":2"),
    ("", {"COUNTERSIGN_LOG_LEVEL": "loud"}, "log_level", "one of debug", "env"),
]


@pytest.mark.parametrize(("toml", "env", "key", "what", "source"), BAD, ids=[b[2] for b in BAD])
def test_each_bad_value_is_one_problem_naming_key_source_and_fault(
    tmp_path: Path, toml: str, env: dict[str, str], key: str, what: str, source: str
) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(toml, encoding="utf-8")
    problems = inspect_config(str(path), env=env).problems
    assert [p.key for p in problems] == [key], problems
    line = str(problems[0])
    assert line.startswith(key) and what in line and source in line, line
    if not env:
        assert f"settings.toml{source}" in problems[0].source


def test_a_secret_is_never_echoed_in_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[outbound]\nsmtp_password = 123456789\n[api]\nkeys = "k-789"\n')
    problems = inspect_config(str(path), env={}).problems
    assert {p.key for p in problems} == {"outbound.smtp_password", "api.keys"}
    assert not any("789" in str(p) for p in problems), problems


def test_the_command_reports_every_problem_of_file_and_environment_at_once(tmp_path: Path) -> None:
    (tmp_path / "countersign.toml").write_text(
        'retention = "-3d"\nmail = "x"\n[inbound]\nsmtp_port = 99999\nmax_bytes = -1\n'
        '[database]\nurl = "mysql://u:pw@db/cs"\n',
        encoding="utf-8",
    )
    env = clean_env(COUNTERSIGN_WEB_PORT="0", COUNTERSIGN_INBOUND_SMTP_PROT="25")
    result = Cli(tmp_path, env).run("config", "check")
    assert result.code == 2, str(result)
    assert "Traceback" not in result.stderr
    problems = result.stderr_lines
    assert len(problems) == 7, problems
    for key in (
        "retention (countersign.toml:1)",
        "mail (countersign.toml:2)",
        "inbound.smtp_port (countersign.toml:4)",
        "inbound.max_bytes (countersign.toml:5)",
        "database.url (countersign.toml:7)",
        "web.port (env COUNTERSIGN_WEB_PORT)",
        "COUNTERSIGN_INBOUND_SMTP_PROT (environment)",
    ):
        assert sum(key in line for line in problems) == 1, (key, problems)
    assert "pw" not in result.stderr  # the database password is not echoed


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe[mail]\n", b"[mail\ndomain = 'x'\n"],
    ids=["not-utf8", "not-toml"],
)
def test_a_file_that_cannot_be_read_is_one_line_for_check_and_serve(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "bad.toml").write_bytes(content)
    cli = Cli(tmp_path, clean_env())
    for args in (("config", "check"), ("serve",), ("account", "list")):
        result = cli.run("--config", "bad.toml", *args)
        assert result.code == 2, str(result)
        assert len(result.stderr_lines) == 1 and "bad.toml" in result.stderr, str(result)
        assert "Traceback" not in result.stderr


def test_serve_refuses_a_bad_configuration_in_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_INBOUND_SMTP_PORT="99999"))
    result = cli.run("serve")
    assert result.code == 2, str(result)
    assert result.stderr_lines == [
        "countersign: configuration: inbound.smtp_port (env COUNTERSIGN_INBOUND_SMTP_PORT):"
        " must be a port number from 1 to 65535, got 99999"
    ]


def test_check_passes_a_good_file_and_show_says_where_each_value_came_from(
    tmp_path: Path,
) -> None:
    (tmp_path / "countersign.toml").write_text(
        '[mail]\ndomain = "contacts.example.net"\n[outbound]\nsmtp_password = "hunter2"\n'
        '[database]\nurl = "postgresql+psycopg://cs:dbsecret@db/cs"\n'
        '[api]\nkeys = { crm = "apikey-123" }\n',
        encoding="utf-8",
    )
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_WEB_PORT="9090"))
    assert cli.run("config", "check").code == 0
    shown = cli.run("config", "show", "--json")
    assert shown.code == 0, str(shown)
    values = shown.json["values"]
    assert values["mail.domain"] == {
        "value": "contacts.example.net",
        "source": "countersign.toml:2",
    }
    assert values["web.port"] == {"value": 9090, "source": "env COUNTERSIGN_WEB_PORT"}
    assert values["web.host"] == {"value": "127.0.0.1", "source": "default"}
    assert values["mail.from"]["value"] == "Countersign <contacts@contacts.example.net>"
    assert values["api.keys"]["value"] == {"crm": "********"}
    for secret in ("hunter2", "dbsecret", "apikey-123"):
        assert secret not in shown.stdout
    text = cli.run("config", "show")
    assert "web.port = 9090  # env COUNTERSIGN_WEB_PORT" in text.stdout.splitlines()
    assert not any(s in text.stdout for s in ("hunter2", "dbsecret", "apikey-123"))


def test_version(tmp_path: Path) -> None:
    result = Cli(tmp_path, clean_env()).run("--version")
    assert result.code == 0
    assert result.stdout.strip() == "countersign 0.1.0"
