"""`countersign config check` and `config show`: the configuration as the daemon reads it."""

from __future__ import annotations

import json
from typing import Any

import click

from countersign.config import Inspection, Problem, flat_values, inspect_config, mask
from countersign.gateway.cli.base import App, emit, json_option, pass_app

# Keys whose empty value means "derived from another key": show what is in force.
_DERIVED = {"database.url": "database_url", "mail.from": "mail_from"}


@click.group("config")
def config_group() -> None:
    """The configuration: check it, or show what is in force and where it came from."""


@config_group.command("check")
@json_option
@pass_app
def config_check(app: App, as_json: bool) -> None:
    """Read the file and the environment, render the templates; one line per problem, exit 2."""
    inspection = inspect_config(app.config_path)
    if not inspection.problems:  # the templates only with a configuration that reads well
        inspection.problems.extend(_template_problems(inspection))
    problems = [{"key": p.key, "source": p.source, "problem": p.what} for p in inspection.problems]
    if as_json:
        document = {"ok": not problems, "file": _file(inspection), "problems": problems}
        click.echo(json.dumps(document, indent=2))
    elif not problems:
        click.echo(f"configuration is valid ({_file(inspection) or 'no file: defaults'})")
    for problem in inspection.problems if not as_json else ():
        click.echo(f"countersign: config: {' '.join(str(problem).split())}", err=True)
    if problems:
        raise SystemExit(2)


@config_group.command("show")
@json_option
@pass_app
def config_show(app: App, as_json: bool) -> None:
    """Every key's value in force (secrets masked) and where it came from."""
    inspection = inspect_config(app.config_path)
    rows = _rows(inspection)
    emit(
        as_json,
        {"file": _file(inspection), "values": rows},
        lambda: [
            f"{key} = {json.dumps(row['value'])}  # {row['source']}" for key, row in rows.items()
        ],
    )
    for problem in inspection.problems:
        click.echo(f"countersign: config: {' '.join(str(problem).split())}", err=True)
    if inspection.problems:
        raise SystemExit(2)


def _template_problems(inspection: Inspection) -> list[Problem]:
    """Every notice and page rendered through templates.dir's overrides, and the brand."""
    # Imported here: the renderer (Jinja, the pages) is not needed by `config show`.
    from countersign.gateway.template_check import template_problems

    return [
        Problem(p.key, p.source or inspection.sources.get(p.key, "default"), p.what)
        for p in template_problems(inspection.config)
    ]


def _rows(inspection: Inspection) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for key, value in flat_values(inspection.config).items():
        source = inspection.sources.get(key, "default")
        if key in _DERIVED and not value:
            value = getattr(inspection.config, _DERIVED[key])
            source = f"{source} (derived)"
        shown = mask(key, value)
        rows[key] = {"value": list(shown) if isinstance(shown, tuple) else shown, "source": source}
    return rows


def _file(inspection: Inspection) -> str | None:
    return str(inspection.file) if inspection.file else None
