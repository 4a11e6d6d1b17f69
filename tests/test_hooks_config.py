"""The hooks and applier keys: [[hooks.endpoints]] tables read from the file, checked,
and their secrets never shown by `config show`."""

from __future__ import annotations

import json
from pathlib import Path

from countersign.config import HookEndpoint, inspect_config
from tests.cli_helpers import Cli, clean_env

GOOD = """
[[hooks.endpoints]]
url = "https://panel.example/countersign"
secret = "whsec-panel-secret"
events = ["request.created", "validator.decided"]

[[hooks.endpoints]]
url = "http://billing.example/hook"
secret = "whsec-billing-secret"

[apply]
url = "https://registry.example/apply"
secret = "apply-secret-value"
"""


def test_endpoints_are_read_as_tables_and_shown_without_their_secrets(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(GOOD)
    inspection = inspect_config(str(tmp_path / "c.toml"), env={})
    assert inspection.problems == []
    assert inspection.config.hooks.endpoints == (
        HookEndpoint(
            "https://panel.example/countersign",
            "whsec-panel-secret",
            ("request.created", "validator.decided"),
        ),
        HookEndpoint("http://billing.example/hook", "whsec-billing-secret", ()),
    )
    shown = Cli(tmp_path, clean_env()).run("--config", str(tmp_path / "c.toml"), "config", "show")
    assert shown.code == 0, shown.stderr
    for secret in ("whsec-panel-secret", "whsec-billing-secret", "apply-secret-value"):
        assert secret not in shown.stdout
    line = next(x for x in shown.stdout.splitlines() if x.startswith("hooks.endpoints = "))
    listed = json.loads(line.split(" = ", 1)[1].rsplit("  #", 1)[0])
    assert [e["secret"] for e in listed] == ["********", "********"]


def test_a_bad_endpoint_an_unknown_event_and_an_unsigned_applier_are_refused(
    tmp_path: Path,
) -> None:
    cases = {
        '[[hooks.endpoints]]\nurl = "ftp://x"\nsecret = "s3cret"\n': "hooks.endpoints[0].url",
        '[[hooks.endpoints]]\nurl = "https://x.example"\n': "hooks.endpoints[0].secret",
        '[[hooks.endpoints]]\nurl = "https://x.example"\nsecret = "s3cret"\n'
        'events = ["request.nope"]\n': "unknown event type 'request.nope'",
        '[apply]\nurl = "https://x.example"\n': "apply.secret",
        '[apply]\nurl = "registry"\nsecret = "s3cret"\n': "apply.url",
        "[hooks]\nendpoints = 3\n": "expected [[hooks.endpoints]] tables",
    }
    for text, named in cases.items():
        (tmp_path / "c.toml").write_text(text)
        problems = [str(p) for p in inspect_config(str(tmp_path / "c.toml"), env={}).problems]
        assert len(problems) == 1 and named in problems[0], (text, problems)
    env = {"COUNTERSIGN_HOOKS_ENDPOINTS": "https://x.example"}
    problems = inspect_config(str(tmp_path / "missing.toml"), env=env).problems
    assert any("not in the environment" in str(p) for p in problems)
