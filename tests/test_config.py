"""Configuration: the contract's defaults, the TOML file, environment overrides
and the errors an operator sees for a bad value."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from countersign.config import Config, ConfigError, load_config, parse_duration
from countersign.workflow.policy import Policy


@pytest.fixture(autouse=True)
def _empty_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # load_config reads ./countersign.toml when it exists: run where there is none.
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "settings.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_are_the_contracts_table() -> None:
    config = load_config(env={})
    assert config.data_dir == "./var"
    assert config.database_url == "sqlite:///var/countersign.db"
    assert config.mail.domain == "countersign.localhost"
    assert config.mail_from == "Countersign <contacts@countersign.localhost>"
    assert config.mail.reply_local == "confirm"
    assert config.mail.public_url == "http://127.0.0.1:8080"
    inbound = config.inbound
    assert (inbound.smtp_host, inbound.smtp_port) == ("127.0.0.1", 8025)
    assert inbound.max_bytes == 5_242_880
    assert inbound.require_sender_match is True
    assert inbound.trusted_authserv_id is None
    assert inbound.imap_host is None  # IMAP off
    assert inbound.imap_port == 993
    assert inbound.imap_folder == "INBOX"
    assert inbound.imap_processed_folder == "Processed"
    assert inbound.imap_tls is True
    outbound = config.outbound
    assert outbound.smtp_host is None  # Maildir
    assert outbound.smtp_port == 25
    assert outbound.starttls is False
    assert config.outbox_dir == Path("var/outbox")
    assert (config.web.host, config.web.port) == ("127.0.0.1", 8080)
    assert config.requests.expire_after == "7d"
    assert config.expire_after == timedelta(days=7)
    assert config.requests.remind_after == ("2d", "5d")
    assert config.remind_after == (timedelta(days=2), timedelta(days=5))
    assert config.sweep_every == timedelta(seconds=30)
    assert dict(config.api.keys) == {}
    assert config.owner_timeout == timedelta(seconds=15)
    assert load_config(env={}) == Config()


def test_no_file_at_all_is_fine_and_the_working_directory_file_is_read(tmp_path: Path) -> None:
    assert load_config(env={}) == Config()
    write(tmp_path, '[mail]\ndomain = "cwd.example"\n', name="countersign.toml")
    assert load_config(env={}).mail.domain == "cwd.example"


def test_values_from_a_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "/srv/countersign"

[database]
url = "postgresql+psycopg://cs@db/countersign"

[mail]
domain = "contacts.example.net"
from = "Contacts <noreply@example.net>"
reply_local = "answer"
public_url = "https://contacts.example.net"

[inbound]
smtp_port = 2525
require_sender_match = false
imap_host = "imap.example.net"
imap_tls = false

[outbound]
smtp_host = "relay.example.net"
starttls = true

[requests]
expire_after = "36h"
remind_after = ["20h", "90s"]

[scheduler]
sweep_every = "5s"

[api]
keys = { billing = "s3cret" }
""",
    )
    config = load_config(path, env={})
    assert config.data_dir == "/srv/countersign"
    assert config.database_url == "postgresql+psycopg://cs@db/countersign"
    assert config.mail.domain == "contacts.example.net"
    assert config.mail_from == "Contacts <noreply@example.net>"
    assert config.mail.reply_local == "answer"
    assert config.inbound.smtp_port == 2525
    assert config.inbound.require_sender_match is False
    assert config.inbound.imap_host == "imap.example.net"
    assert config.inbound.imap_tls is False
    assert config.outbound.smtp_host == "relay.example.net"
    assert config.outbound.starttls is True
    assert config.outbox_dir == Path("/srv/countersign/outbox")
    assert config.expire_after == timedelta(hours=36)
    assert config.remind_after == (timedelta(seconds=90), timedelta(hours=20))  # sorted
    assert config.sweep_every == timedelta(seconds=5)
    assert dict(config.api.keys) == {"billing": "s3cret"}
    assert config.api.keys["billing"] == "s3cret"
    policy = Policy.from_config(config)
    assert policy.expire_after == timedelta(hours=36)
    assert policy.mail_domain == "contacts.example.net"
    assert policy.require_sender_match is False


def test_derived_defaults_follow_the_keys_they_depend_on(tmp_path: Path) -> None:
    path = write(tmp_path, 'data_dir = "/data"\n[mail]\ndomain = "example.org"\n')
    config = load_config(path, env={})
    assert config.database_url == "sqlite:////data/countersign.db"
    assert config.mail_from == "Countersign <contacts@example.org>"


def test_environment_beats_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'data_dir = "/from/file"\n[inbound]\nsmtp_port = 2525\nimap_tls = true\n'
        '[database]\nurl = "sqlite:///file.db"\n[requests]\nremind_after = ["1d"]\n',
    )
    env = {
        "COUNTERSIGN_DATA_DIR": "/from/env",
        "COUNTERSIGN_INBOUND_SMTP_PORT": "2626",
        "COUNTERSIGN_INBOUND_IMAP_TLS": "off",
        "COUNTERSIGN_DATABASE_URL": "sqlite:///env.db",
        "COUNTERSIGN_MAIL_FROM": "Env <env@example.org>",
        "COUNTERSIGN_REQUESTS_REMIND_AFTER": "3d, 1d",
        "COUNTERSIGN_API_KEYS": '{"crm": "k"}',
    }
    config = load_config(path, env=env)
    assert config.data_dir == "/from/env"
    assert config.inbound.smtp_port == 2626
    assert config.inbound.imap_tls is False
    assert config.database_url == "sqlite:///env.db"
    assert config.mail_from == "Env <env@example.org>"
    assert config.remind_after == (timedelta(days=1), timedelta(days=3))
    assert dict(config.api.keys) == {"crm": "k"}
    # Keys the environment does not name keep the file's value.
    assert load_config(path, env={"COUNTERSIGN_DATA_DIR": "/x"}).inbound.smtp_port == 2525


def test_a_list_may_be_written_as_one_string(tmp_path: Path) -> None:
    path = write(tmp_path, '[requests]\nremind_after = "1d, 3d"\n')
    assert load_config(path, env={}).remind_after == (timedelta(days=1), timedelta(days=3))
    assert load_config(env={"COUNTERSIGN_REQUESTS_REMIND_AFTER": '["6h"]'}).remind_after == (
        timedelta(hours=6),
    )


def test_data_dir_from_the_environment_moves_the_default_database() -> None:
    config = load_config(env={"COUNTERSIGN_DATA_DIR": "/tmp/cs"})
    assert config.database_url == "sqlite:////tmp/cs/countersign.db"
    assert config.outbox_dir == Path("/tmp/cs/outbox")


def test_file_chosen_by_option_then_environment(tmp_path: Path) -> None:
    by_option = write(tmp_path, '[mail]\ndomain = "option.example"\n', "a.toml")
    by_env = write(tmp_path, '[mail]\ndomain = "env.example"\n', "b.toml")
    write(tmp_path, '[mail]\ndomain = "cwd.example"\n', "countersign.toml")
    env = {"COUNTERSIGN_CONFIG": by_env}
    assert load_config(by_option, env=env).mail.domain == "option.example"
    assert load_config(None, env=env).mail.domain == "env.example"
    assert load_config(None, env={}).mail.domain == "cwd.example"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("36h", timedelta(hours=36)),
        ("7d", timedelta(days=7)),
        ("15m", timedelta(minutes=15)),
        ("2w", timedelta(weeks=2)),
        ("500ms", timedelta(milliseconds=500)),
        (" 1.5h ", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "7 days", "-1d", "d", "1y", "1d2h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('[requests]\nexpire_after = "a week"\n', {}, "requests.expire_after"),
        ('[requests]\nremind_after = ["2d", "soon"]\n', {}, "requests.remind_after"),
        ("", {"COUNTERSIGN_SCHEDULER_SWEEP_EVERY": "often"}, "scheduler.sweep_every"),
        ('[scheduler]\nsweep_every = "0s"\n', {}, "scheduler.sweep_every"),
        ('[mail]\ndomian = "x"\n', {}, "mail.domian"),
        ('colour = "blue"\n', {}, "colour"),
        ("[smtp]\nport = 25\n", {}, "smtp"),
        ('mail = "x"\n', {}, "mail"),
        ('[inbound]\nimap_tls = "maybe"\n', {}, "inbound.imap_tls"),
        ("", {"COUNTERSIGN_INBOUND_REQUIRE_SENDER_MATCH": "perhaps"}, "require_sender_match"),
        ("[inbound]\nrequire_sender_match = 1\n", {}, "inbound.require_sender_match"),
        ('[inbound]\nsmtp_port = "twenty-five"\n', {}, "inbound.smtp_port"),
        ("[inbound]\nsmtp_port = true\n", {}, "inbound.smtp_port"),
        ("[web]\nport = 8080.5\n", {}, "web.port"),
        ("", {"COUNTERSIGN_WEB_PORT": "80a"}, "web.port"),
        ("[requests]\nremind_after = 2\n", {}, "requests.remind_after"),
        ("[mail]\ndomain = 5\n", {}, "mail.domain"),
        ("[mail.domain]\nname = 'x'\n", {}, "mail.domain"),
        ('[api]\nkeys = "secret"\n', {}, "api.keys"),
        ("", {"COUNTERSIGN_API_KEYS": "{not json"}, "api.keys"),
        ('[leases]\nowner_timeout = "soon"\n', {}, "leases.owner_timeout"),
        ("", {"COUNTERSIGN_LEASES_OWNER_TIMEOUT": "1s"}, "leases.owner_timeout"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, env=env)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[mail\ndomain = "x"\n')
    with pytest.raises(ConfigError, match=r"settings\.toml"):
        load_config(path, env={})


def test_missing_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        load_config(str(tmp_path / "nowhere.toml"), env={})
    with pytest.raises(ConfigError, match=r"gone\.toml"):
        load_config(None, env={"COUNTERSIGN_CONFIG": str(tmp_path / "gone.toml")})


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    """The command line prints them on one line of stderr."""
    for toml in ('[mail\ndomain = "x"\n', '[mail]\ndomain = "x\n', "x = [1,\n"):
        path = write(tmp_path, toml)
        with pytest.raises(ConfigError) as raised:
            load_config(path, env={})
        assert "\n" not in str(raised.value)
