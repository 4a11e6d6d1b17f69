"""Checking an operator's templates at start: a broken override fails now, not at 3 a.m.

``check_templates(config)`` reads every file under ``templates.dir`` (a syntax
error is named by file and line), then renders every notice kind in every
language through the overrides with a sample request, and compiles every page.  `serve`
refuses to start on the first problem; `config check` can list them all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from countersign.config import Config
from countersign.gateway.composing import look_of
from countersign.gateway.pages import page_environment
from countersign.gateway.reading_commands import parse_command
from countersign.gateway.render import KINDS, LANGUAGES, environment, render_notice

_VALIDATOR = {"account": "a@example.com", "decision": "decline", "at": None, "via": "smtp"}
SAMPLE_REQUEST: dict[str, Any] = {
    "id": 1,
    "serviceDomain": "example.com",
    "contactTypes": ["contactTech"],
    "fromAccount": "a@example.com",
    "toAccount": "b@example.com",
    "askingAccount": "a@example.com",
    "state": "validatingByCustomers",
    "dateRequest": "2026-01-01T00:00:00Z",
    "dateDone": None,
    "expires": "2026-01-08T00:00:00Z",
    "error": None,
    "validators": [{**_VALIDATOR, "comment": "sample"}],
}
_CODE = "ABCDEFGH-IJKLMNOP-QRSTUVWX-YZ234567"
SAMPLE_CONTEXT: dict[str, Any] = {
    "request": SAMPLE_REQUEST,
    "recipient": {"email": "a@example.com", "language": "en"},
    "code": _CODE,
    "link": f"http://127.0.0.1:8080/confirm/1?token={_CODE}",
    "reply_address": "confirm+ABCDEFGHIJKLMNOPQRSTUVWXYZ234567@countersign.localhost",
    "reason": "sample reason",
    "reason_code": "used",
    "public_url": "http://127.0.0.1:8080",
}
PAGES = ("confirm.html.j2", "outcome.html.j2", "missing.html.j2", "unavailable.html.j2")


def check_templates(config: Config) -> list[str]:
    """Every problem with the configured templates and brand, one line each; [] when none."""
    look = look_of(config)
    problems = _brand_problems(look.brand_name)
    if not look.template_dir:
        return problems  # the built-in templates are checked by the test suite, not each start
    folder = Path(look.template_dir)
    if not folder.is_dir():
        return [*problems, f"templates.dir: no such folder: {folder}"]
    problems += _syntax_problems(folder)
    if problems:
        return problems  # rendering would only repeat them
    for kind in sorted(KINDS):
        for language in LANGUAGES:
            try:
                render_notice(kind, language, SAMPLE_CONTEXT, look)
            except jinja2.TemplateError as error:
                problems.append(f"{look.template_dir}: notice {kind} ({language}): {error}")
    return problems + _page_problems(look.template_dir)


def _brand_problems(brand: str) -> list[str]:
    # The footer begins with the brand: a line of a notice must never read as a command.
    if parse_command(brand) is not None:
        return [f"mail.brand_name: {brand!r} begins with a command word"]
    return []


def _syntax_problems(folder: Path) -> list[str]:
    env = environment(str(folder))
    problems = []
    for path in sorted(folder.rglob("*.j2")):
        try:
            env.parse(path.read_text(encoding="utf-8"), path.name, str(path))
        except jinja2.TemplateSyntaxError as error:
            problems.append(f"{path}:{error.lineno}: {error.message}")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{path}: cannot read: {error}")
    return problems


def _page_problems(template_dir: str) -> list[str]:
    """The pages compile (each is rendered with values of its own, so only compiled here)."""
    env = page_environment(template_dir)
    problems = []
    for name in (*PAGES, *(f"{language}.j2" for language in LANGUAGES)):
        try:
            env.get_template(name)
        except jinja2.TemplateError as error:
            problems.append(f"{template_dir}: page {name}: {error}")
    return problems
