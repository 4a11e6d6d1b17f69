"""The account pages' keys: their defaults are the contract's, the environment sets
them, and a bad one is one line naming the key (the daemon exits 2 on it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from countersign.config import ConfigError, load_config
from countersign.workflow.send_limits import SendLimits, key_limits
from tests.cli_helpers import Cli, clean_env


def test_defaults() -> None:
    config = load_config(env={})
    assert (config.web.sign_in_valid, config.web.session_valid) == ("15m", "12h")
    assert SendLimits.from_config(config) == SendLimits(
        sign_in_per_address=3,
        sign_in_per_client=10,
        sign_in_window=timedelta(hours=1),
        open_requests_per_account=20,
        mails_per_recipient=10,
        mail_window=timedelta(days=1),
    )
    assert key_limits(config) == {}


def test_from_the_environment() -> None:
    config = load_config(
        env={
            "COUNTERSIGN_LIMITS_MAILS_PER_RECIPIENT": "4",
            "COUNTERSIGN_WEB_SIGN_IN_VALID": "5m",
            "COUNTERSIGN_API_KEY_LIMITS": '{"reseller": "open_requests_per_account=2"}',
        }
    )
    assert config.limits.mails_per_recipient == 4 and config.web.sign_in_valid == "5m"
    (reseller,) = key_limits(config).values()
    assert (reseller.open_requests_per_account, reseller.mails_per_recipient) == (2, 0)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"COUNTERSIGN_WEB_SESSION_VALID": "soon"}, "web.session_valid"),
        ({"COUNTERSIGN_LIMITS_SIGN_IN_WINDOW": "1 hour"}, "limits.sign_in_window"),
        ({"COUNTERSIGN_LIMITS_OPEN_REQUESTS_PER_ACCOUNT": "many"}, "limits.open_requests"),
        ({"COUNTERSIGN_API_KEY_LIMITS": '{"k": "mails=3"}'}, "api.key_limits.k"),
    ],
)
def test_a_bad_value_names_its_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(env=env)


def test_serve_refuses_a_bad_key_limit_in_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    done = cli.run("serve", COUNTERSIGN_API_KEY_LIMITS='{"k": "open_requests_per_account=x"}')
    assert done.code == 2, done
    assert len(done.stderr_lines) == 1 and "api.key_limits.k" in done.stderr, done
