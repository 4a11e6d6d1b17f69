"""Checking an operator's templates at start: a broken override fails now, not at 3 a.m.

``template_problems(config)`` reads every file under ``templates.dir`` (a syntax
error is named by file and line), then renders every notice kind and every page
in every language through the overrides with a sample request.  `serve` refuses
to start on the first problem; `config check` lists them all (exit status 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from countersign.config import Config, Problem
from countersign.gateway.look import Look, look_of
from countersign.gateway.mail_in.reading_commands import parse_command
from countersign.gateway.mail_out.render import KINDS, LANGUAGES, environment, render_notice
from countersign.gateway.web.page import page_environment

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
_PAGE_VALUES: dict[str, dict[str, Any]] = {
    "confirm.html.j2": {"request": SAMPLE_REQUEST, "token": _CODE, "note": None},
    "outcome.html.j2": {
        "success": True,
        "outcome": "accepted-waiting",
        "request": SAMPLE_REQUEST,
        "waiting": ["b@example.com"],
        "state": "validatingByCustomers",
    },
    "missing.html.j2": {},
    "unavailable.html.j2": {},
}


def check_templates(config: Config) -> list[str]:
    """Every problem with the configured templates and brand, one line each; [] when none."""
    return [str(problem) for problem in template_problems(config)]


def template_problems(config: Config) -> list[Problem]:
    """What is wrong with the brand and the overrides, each naming its file (and line)."""
    look = look_of(config)
    problems = _brand_problems(look.brand_name)
    if not look.template_dir:
        return problems  # the built-in templates are checked by the test suite, not each start
    folder = Path(look.template_dir)
    if not folder.is_dir():
        return [*problems, Problem("templates.dir", "", f"no such folder: {folder}")]
    problems += _syntax_problems(folder)
    if problems:
        return problems  # rendering would only repeat them
    return _notice_problems(look) + _page_problems(look)


def _brand_problems(brand: str) -> list[Problem]:
    # The footer begins with the brand: a line of a notice must never read as a command.
    if parse_command(brand) is not None:
        return [Problem("mail.brand_name", "", f"{brand!r} begins with a command word")]
    return []


def _syntax_problems(folder: Path) -> list[Problem]:
    env = environment(str(folder))
    problems = []
    for path in sorted(folder.rglob("*.j2")):
        try:
            env.parse(path.read_text(encoding="utf-8"), path.name, str(path))
        except jinja2.TemplateSyntaxError as error:
            problems.append(Problem("", f"{path}:{error.lineno}", error.message or "syntax error"))
        except (OSError, UnicodeDecodeError) as error:
            problems.append(Problem("", str(path), f"cannot read: {error}"))
    return problems


def _notice_problems(look: Look) -> list[Problem]:
    problems = []
    for kind in sorted(KINDS):
        for language in LANGUAGES:
            try:
                render_notice(kind, language, SAMPLE_CONTEXT, look)
            except jinja2.TemplateError as error:
                what = f"notice {kind} ({language}): {_one_line(error)}"
                problems.append(Problem("", look.template_dir, what))
    return problems


def _page_problems(look: Look) -> list[Problem]:
    """Every page, in every language, rendered with sample values through the overrides."""
    env = page_environment(look.template_dir)
    problems = []
    for language in LANGUAGES:
        for name, values in _PAGE_VALUES.items():
            try:
                words = env.get_template(f"{language}.j2").module
                env.get_template(name).render(
                    lang=language, w=words, root="../", brand=look.brand, request_id=1, **values
                )
            except jinja2.TemplateError as error:
                what = f"page {name} ({language}): {_one_line(error)}"
                problems.append(Problem("", look.template_dir, what))
    return problems


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
