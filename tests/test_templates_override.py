"""An operator's templates.dir and brand: overrides used, the rest built in, a broken
override refused at start with its file and line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient

from countersign.config import Config, MailConfig, TemplatesConfig
from countersign.gateway.look import look_of
from countersign.gateway.mail_out.render import render_notice
from countersign.gateway.marks import NOTICE_MARKS
from countersign.gateway.template_check import check_templates
from countersign.gateway.web.app import create_app
from countersign.store.db import Store
from countersign.templates import TEMPLATE_DIR
from countersign.workflow.policy import Policy
from tests.cli_helpers import Cli, clean_env
from tests.mail_helpers import codes, new_tech_request
from tests.test_render import all_lines, make_context, reads_as_command

MARK = "Words of the operator's own."


def overrides(folder: Path) -> Path:
    """en/refused.txt.j2 and the confirmation page, each the built-in one plus a line."""
    (folder / "en").mkdir(parents=True)
    (folder / "web").mkdir()
    refused = (TEMPLATE_DIR / "en" / "refused.txt.j2").read_text()
    (folder / "en" / "refused.txt.j2").write_text(
        refused.replace("{% block body %}\n", "{% block body %}\n" + MARK + "\n")
    )
    page = (TEMPLATE_DIR / "web" / "confirm.html.j2").read_text()
    (folder / "web" / "confirm.html.j2").write_text(
        page.replace("<form ", f"<p>{MARK}</p>\n<form ", 1)
    )
    return folder


def test_an_override_of_one_notice_and_of_the_page_is_used_the_rest_built_in(
    world: Store, policy: Policy, tmp_path: Path
) -> None:
    config = Config(
        data_dir=str(tmp_path),
        templates=TemplatesConfig(dir=str(overrides(tmp_path / "mine"))),
        mail=MailConfig(brand_name="Acme Hosting", support_address="help@acme.example"),
    )
    assert check_templates(config) == []
    look = look_of(config)
    refused = render_notice("refused", "en", make_context(state="refused"), look)
    assert MARK in refused.text and MARK not in refused.html  # only the .txt was overridden
    assert MARK not in render_notice("refused", "fr", make_context(), look).text
    completed = render_notice("completed", "en", make_context(state="done"), look)
    assert MARK not in completed.text
    # The brand replaces "Countersign" in the words; the reader's mark stays first, as it was.
    assert completed.text.startswith(NOTICE_MARKS["en"])
    assert "Acme Hosting sent this message" in completed.text
    assert "Questions: help@acme.example" in completed.text
    assert "Acme Hosting sent this message" in completed.html
    assert not [line for line in all_lines(completed) if reads_as_command(line)]
    assert config.mail_from == "Acme Hosting <contacts@countersign.localhost>"

    request_id = new_tech_request(world, policy, datetime.now(UTC))
    code = codes(world, request_id)["new@example.com"]
    with TestClient(create_app(world, config, health=lambda: True)) as client:
        page = client.get(f"/confirm/{request_id}", params={"token": code})
        missing = client.get("/confirm/abc")  # not an id: the built-in 404 page
    assert page.status_code == 200 and MARK in page.text
    assert "— Acme Hosting</title>" in page.text
    assert missing.status_code == 404 and MARK not in missing.text  # built in
    assert "Acme Hosting" in missing.text


def test_the_account_pages_wear_the_brand_and_take_overrides(world: Store, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "web" / "account").mkdir(parents=True)
    sign_in = (TEMPLATE_DIR / "web" / "account" / "sign-in.html.j2").read_text()
    (folder / "web" / "account" / "sign-in.html.j2").write_text(
        sign_in.replace("<form ", f"<p>{MARK}</p>\n<form ", 1)
    )
    config = Config(
        data_dir=str(tmp_path),
        templates=TemplatesConfig(dir=str(folder)),
        mail=MailConfig(brand_name="Acme Hosting"),
    )
    with TestClient(create_app(world, config, health=lambda: True)) as client:
        page = client.get("/account")
        token = client.get("/account/sign-in/not-a-token")
    assert page.status_code == 200 and MARK in page.text
    assert "— Acme Hosting</title>" in page.text and "Countersign" not in page.text
    assert MARK not in token.text and "Acme Hosting" in token.text  # built in, branded


def broken(folder: Path) -> Path:
    (folder / "en").mkdir(parents=True)
    path = folder / "en" / "completed.txt.j2"
    path.write_text(
        '{% extends "base.txt.j2" %}\n{% block body %}\nDone {% if %}\n{% endblock %}\n'
    )
    return path


def test_a_syntax_error_in_an_override_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = broken(tmp_path / "mine")
    config = Config(templates=TemplatesConfig(dir=str(tmp_path / "mine")))
    problems = check_templates(config)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:3: "), problems


def test_serve_refuses_to_start_with_one_line_naming_the_file_and_line(tmp_path: Path) -> None:
    path = broken(tmp_path / "mine")
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    result = cli.run("serve", COUNTERSIGN_TEMPLATES_DIR=str(tmp_path / "mine"))
    print(f"\n{result.stderr.strip()}  (exit {result.code})")
    assert result.code == 2  # a configuration that cannot be used, as `config check` says
    assert len(result.stderr_lines) == 1 and result.stderr_lines[0].startswith(
        f"countersign: {path}:3: "
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_config_check_renders_every_override_and_exits_2_naming_the_file_and_line(
    tmp_path: Path,
) -> None:
    path = broken(tmp_path / "mine")
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_TEMPLATES_DIR=str(tmp_path / "mine")))
    result = cli.run("config", "check")
    print(f"\n$ countersign config check\n{result.stderr.strip()}  (exit {result.code})")
    assert result.code == 2
    assert result.stderr_lines == [
        f"countersign: config: {path}:3: Expected an expression, got 'end of statement block'"
    ], result.stderr
    path.write_text(
        '{% extends "base.txt.j2" %}\n{% block body %}\n{{ request.nope.x }}\n{% endblock %}\n'
    )
    result = cli.run("config", "check", "--json")
    assert result.code == 2
    problem = result.json["problems"][0]
    assert "notice completed (en)" in problem["problem"], problem  # rendered, not only parsed
    path.unlink()
    result = cli.run("config", "check")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("configuration is valid")


def test_a_brand_that_begins_with_a_command_word_is_refused() -> None:
    config = Config(mail=MailConfig(brand_name="Accept Hosting"))
    assert check_templates(config) == [
        "mail.brand_name: 'Accept Hosting' begins with a command word"
    ]
