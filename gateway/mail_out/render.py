"""Render a notice (subject, plain text, HTML) from its kind, language and context.

Pure: no database, no clock, no sending. The words live in templates/, one
folder per language; this module only picks the templates and cleans the values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.environment import TemplateModule
from jinja2.runtime import Macro

from countersign.gateway.look import BUILT_IN, Look
from countersign.gateway.marks import SUBJECT_PREFIX
from countersign.rules.contacts import CONTACT_TYPES as ALL_CONTACT_TYPES
from countersign.rules.states import NoticeKind
from countersign.templates import TEMPLATE_DIR

# The kinds and contact types are the rules' own (rules/states.py, rules/contacts.py).
KINDS: frozenset[str] = frozenset(NoticeKind)
CONTACT_TYPES: frozenset[str] = frozenset(ALL_CONTACT_TYPES)
LANGUAGES = ("en", "fr")
DEFAULT_LANGUAGE = "en"

# Everything that could end a line (str.splitlines breaks on all of these) or
# hide in a terminal: a value holding one could start a line of its own, which
# might then read as a command in a reply that quotes the notice.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Bidirectional overrides can make an address display as another one.
_BIDI_CONTROLS = re.compile(r"[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BLANK_RUNS = re.compile(r"\n{3,}")


@dataclass(frozen=True)
class RenderedNotice:
    subject: str
    text: str
    html: str


def render_notice(
    kind: str, language: str, context: Mapping[str, object], look: Look = BUILT_IN
) -> RenderedNotice:
    """Render the `kind` notice in `language` (English when not supported)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind: {kind!r}")
    _check_contact_types(context)
    env = environment(look.template_dir)
    lang = notice_language(language)
    words = _Words(env.get_template(f"{lang}/words.j2").module)
    values = {**_clean_context(context), "language": lang, "words": words, "brand": look.brand}
    return RenderedNotice(
        subject=_subject(kind, values["request"], words),
        text=_body(env, f"{lang}/{kind}.txt.j2", values),
        html=_body(env, f"{lang}/{kind}.html.j2", values),
    )


def warm_templates(template_dir: str = "") -> None:
    """Compile the notices' templates now rather than on the first notice that needs each."""
    env = environment(template_dir)
    for name in env.list_templates(extensions=["j2"]):
        if name.partition("/")[0] in LANGUAGES or "/" not in name:  # not web/, the pages'
            env.get_template(name)


def notice_language(language: str | None) -> str:
    """The supported language for an account's setting: "fr", "fr-CA", "FR" give "fr"."""
    base = re.split(r"[-_]", (language or "").strip().lower(), maxsplit=1)[0]
    return base if base in LANGUAGES else DEFAULT_LANGUAGE


def utc_datetime(value: object) -> datetime | None:
    """An ISO 8601 string (or datetime) as an aware UTC datetime; None if it is not one.

    A naive value is taken as UTC: the store writes UTC throughout.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _check_contact_types(context: Mapping[str, object]) -> None:
    # Each type is named in words of the notice's language; an unknown one has
    # no words and would be shown as it is, inside sentences.
    request = context.get("request")
    types = request.get("contactTypes") if isinstance(request, Mapping) else None
    if isinstance(types, list | tuple) and not set(types) <= CONTACT_TYPES:
        raise ValueError(f"unknown contact type in {types!r}")


class _Words:
    """A language's words.j2 as the templates see it: its macros give plain text.

    Jinja marks a macro's output safe when an autoescaped template calls it,
    although words.j2, not autoescaped, printed the values unescaped: an
    address holding "<script>" would reach the HTML as is. Called from here,
    without the caller's escaping mode, a macro returns a plain str, which the
    HTML template then escapes like any other value.

    One instance serves one notice. Its macros are pure, and the subject, text
    and HTML ask for the same phrases (the contact types four times, the date
    twice): each answer is kept for the notice, as Jinja macro calls are the
    dearest part of rendering.
    """

    def __init__(self, module: TemplateModule) -> None:
        self._module = module
        self._said: dict[object, str] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        if isinstance(value, Macro):
            value = self._plain(value)
        setattr(self, name, value)  # found at once next time, without __getattr__
        return value

    def _plain(self, macro: Macro) -> Any:
        def call(*args: object, **kwargs: object) -> str:
            key = None if kwargs else _key(macro.name, args)
            if key is None:  # not worth keeping, or an argument that cannot be a key
                return str(macro(*args, **kwargs))
            said = self._said.get(key)
            if said is None:
                said = self._said[key] = str(macro(*args, **kwargs))
            return said

        return call


def _key(name: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
    """A key for a call whose arguments are strings or lists of them, as words.j2's are.

    Types are checked exactly: Markup("x") is not taken for "x".
    """
    key: list[object] = [name]
    for arg in args:
        if arg is None or type(arg) is str:
            key.append(arg)
        elif type(arg) is list and all(type(item) is str for item in arg):
            key.append(tuple(arg))
        else:
            return None
    return tuple(key)


def _subject(kind: str, request: Any, words: _Words) -> str:
    # A sign-in belongs to no request: its tag has no number.
    prefix = SUBJECT_PREFIX.format(request_id=request["id"]) if request else "[Countersign]"
    # The macro spans lines for reading; a header is one line, single-spaced.
    return " ".join(f"{prefix} {words.subject(kind, request)}".split())


def _body(env: jinja2.Environment, template_name: str, values: Mapping[str, object]) -> str:
    text = env.get_template(template_name).render(values)
    # Optional parts leave runs of blank lines behind; one blank line is enough.
    return _BLANK_RUNS.sub("\n\n", text).strip("\n") + "\n"


def _clean_context(context: Mapping[str, object]) -> dict[str, object]:
    return {key: _one_line(value) for key, value in context.items()}


def _one_line(value: object) -> object:
    """The value with every string flattened to one line, through dicts and lists."""
    if isinstance(value, str):
        if value.isprintable():  # every character either pattern matches is unprintable
            return value
        return _BIDI_CONTROLS.sub("", _LINE_BREAKING.sub(" ", value))
    if isinstance(value, Mapping):
        return {key: _one_line(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_one_line(item) for item in value]
    return value


def _label_width(rows: Iterable[tuple[str, object]]) -> int:
    """The length of the longest label of (label, value) rows."""
    return max(len(label) for label, _ in rows)


def _environment(template_dir: str = "") -> jinja2.Environment:
    search: list[str | Path] = [template_dir, TEMPLATE_DIR] if template_dir else [TEMPLATE_DIR]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        # Only *.html.j2 is escaped; words.j2 and *.txt.j2 give plain text,
        # which an HTML template escapes when it prints it.
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), default_for_string=False, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters["utc"] = utc_datetime
    # What `map("first")|map("length")|max` gives, without a filter call per item.
    env.filters["label_width"] = _label_width
    return env


# Built once a folder: compiled templates are cached in it for the life of the process.
_ENVIRONMENTS: dict[str, jinja2.Environment] = {}


def environment(template_dir: str = "") -> jinja2.Environment:
    """The notices' templates: the built-in ones, under ``template_dir``'s overrides."""
    if template_dir not in _ENVIRONMENTS:
        _ENVIRONMENTS[template_dir] = _environment(template_dir)
    return _ENVIRONMENTS[template_dir]


def reload_templates() -> None:
    """SIGHUP: forget the compiled templates, so that each is read again on next use."""
    for env in _ENVIRONMENTS.values():
        if env.cache is not None:
            env.cache.clear()
