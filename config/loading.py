"""Reading the configuration: a TOML file, every key overridable by the environment.

Where the file comes from: ``--config PATH``, else ``COUNTERSIGN_CONFIG``, else
``countersign.toml`` in the working directory if it exists, else nothing at all
(the embedded defaults run a complete daemon).  Any key can then be overridden
as ``COUNTERSIGN_<SECTION>_<KEY>`` (top-level keys as ``COUNTERSIGN_<KEY>``).
Every problem is collected (``Reading``) and reported at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from countersign.config.checks import check_values
from countersign.config.schema import DEFAULT_FILE, ENV_PREFIX, NOT_KEYS, Config
from countersign.config.values import SECRET_KEYS, ConfigError, Problem, key_lines


def key_name(field_name: str) -> str:
    # `from` is a Python keyword; the dataclass field is `from_`.
    return field_name.rstrip("_")


def flat_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"section.key": value}`` for every key, in the order of the dataclasses."""
    found: dict[str, Any] = {}
    for fld in dataclasses.fields(config):
        value = getattr(config, fld.name)
        dotted = f"{prefix}{key_name(fld.name)}"
        if dataclasses.is_dataclass(value):
            found.update(flat_values(value, f"{dotted}."))
        else:
            found[dotted] = value
    return found


def read_text_file(file: Path) -> tuple[str, Problem | None]:
    try:
        data = file.read_bytes()
    except OSError as error:
        return "", Problem("", str(file), f"cannot read: {error.strerror}")
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return "", Problem("", str(file), f"not UTF-8 text (byte {error.start + 1} of the file)")


class Reading:
    """What building the configuration collects, so that every problem is reported at once."""

    def __init__(self, file: Path | None, text: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.lines = key_lines(text)
        self.env = env
        self.sources: dict[str, str] = {}
        self.problems: list[Problem] = []

    def source(self, key: str) -> str:
        if key in self.lines:
            return f"{self.file}:{self.lines[key]}"
        return str(self.file) if self.file else "default"

    def problem(self, key: str, what: str, source: str | None = None) -> None:
        if what.startswith(f"{key}: "):
            what = what[len(key) + 2 :]
        if key in SECRET_KEYS:
            what = what.split(", got ")[0]  # a secret is never echoed, even a wrong one
        self.problems.append(Problem(key, self.source(key) if source is None else source, what))


def _coerce(key: str, hint: Any, value: Any) -> Any:
    """Turn a TOML or environment value into the field's type, or say which key is wrong."""
    text = isinstance(value, str)
    if hint is bool:
        if text:
            lowered = value.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint == int | None:
        return None if value is None or value == "" else _coerce(key, int, value)
    if hint is int:
        # Not int(value) on anything: true would be 1 and 8025.9 would be 8025.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            return int(value)
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    # By origin, not by name: str(Mapping[str, str]) is "collections.abc.Mapping[...]".
    origin = get_origin(hint)
    if origin is tuple:
        items = _env_list(key, value) if text else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(str(item) for item in items)
    if origin is Mapping:
        mapping = _env_json(key, value) if text else value
        if not isinstance(mapping, dict):
            raise ConfigError(f"{key}: expected a table of name = value, got {value!r}")
        return {str(k): str(v) for k, v in mapping.items()}
    optional = origin is types.UnionType and type(None) in get_args(hint)
    if value is None or value == "":
        return None if optional else ""
    if not isinstance(value, str):
        # A TOML number or table where text is expected is a mistake, not text.
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _env_list(key: str, value: str) -> Any:
    stripped = value.strip()
    if stripped.startswith("["):
        return _env_json(key, stripped)
    return [part.strip() for part in stripped.split(",") if part.strip()]


def _env_json(key: str, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ConfigError(f"{key}: expected JSON, got {value!r}") from None


@dataclass
class Inspection:
    """A configuration as read: the values, where each came from, and what is wrong."""

    config: Config
    sources: dict[str, str]  # "section.key" -> "file:line", "env NAME" or "default"
    problems: list[Problem]
    file: Path | None = None


def _build(cls: type[Any], prefix: str, raw: Mapping[str, Any], reading: Reading) -> Any:
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    known = set()
    for fld in dataclasses.fields(cls):
        name = key_name(fld.name)
        known.add(name)
        dotted = f"{prefix}{name}"
        hint = hints[fld.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            section = raw.get(name, {})
            if not isinstance(section, Mapping):
                reading.problem(dotted, f"expected a [{name}] table")
                section = {}
            values[fld.name] = _build(hint, f"{dotted}.", section, reading)
            continue
        if _is_table_list(hint):
            values[fld.name] = _build_tables(get_args(hint)[0], dotted, raw.get(name, []), reading)
            continue
        _read_value(dotted, hint, raw.get(name), name in raw, reading, values, fld.name)
    for unknown in sorted(set(raw) - known):
        reading.problem(f"{prefix}{unknown}", "unknown configuration key")
    return cls(**values)


def _is_table_list(hint: Any) -> bool:
    args = get_args(hint)
    return get_origin(hint) is tuple and bool(args) and dataclasses.is_dataclass(args[0])


def _build_tables(cls: type[Any], key: str, raw: Any, reading: Reading) -> tuple[Any, ...]:
    """A TOML array of tables (``[[hooks.endpoints]]``); from the file only, not the environment."""
    reading.sources[key] = reading.source(key) if raw else "default"
    if env_variable(key) in reading.env:
        reading.problem(key, "set in the file as [[tables]], not in the environment", "environment")
    if not isinstance(raw, list) or not all(isinstance(item, Mapping) for item in raw):
        reading.problem(key, f"expected [[{key}]] tables")
        return ()
    file_only = Reading(reading.file, "", {})
    file_only.lines = reading.lines
    built = tuple(_build(cls, f"{key}[{i}].", item, file_only) for i, item in enumerate(raw))
    reading.problems.extend(file_only.problems)
    return built


def _read_value(
    dotted: str,
    hint: Any,
    in_file: Any,
    present: bool,
    reading: Reading,
    values: dict[str, Any],
    field_name: str,
) -> None:
    env_name = env_variable(dotted)
    if env_name in reading.env:
        raw, source = reading.env[env_name], f"env {env_name}"
    elif present:
        raw, source = in_file, reading.source(dotted)
    else:
        reading.sources[dotted] = "default"
        return
    reading.sources[dotted] = source
    try:
        values[field_name] = _coerce(dotted, hint, raw)
    except ConfigError as error:
        reading.problem(dotted, str(error), source)


def env_variable(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _unknown_variables(reading: Reading, keys: set[str]) -> None:
    known = {env_variable(key) for key in keys}
    for name in sorted(reading.env):
        if name.startswith(ENV_PREFIX) and name not in known and not name.startswith(NOT_KEYS):
            reading.problems.append(Problem(name, "environment", "unknown configuration variable"))


def find_config_file(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("COUNTERSIGN_CONFIG"):
        return Path(env["COUNTERSIGN_CONFIG"])
    default = Path(DEFAULT_FILE)
    return default if default.exists() else None


def inspect_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Inspection:
    """Read the configuration and report every problem, each with its key and source."""
    env = os.environ if env is None else env
    file = find_config_file(path, env)
    text, unreadable = read_text_file(file) if file is not None else ("", None)
    reading = Reading(file, text, env)
    raw: dict[str, Any] = {}
    if unreadable is not None:
        reading.problems.append(unreadable)
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            reading.problems.append(Problem("", str(file), f"not valid TOML: {error}"))
    config: Config = _build(Config, "", raw, reading)
    values = flat_values(config)
    _unknown_variables(reading, set(values))
    for key, what in check_values(values):
        reading.problem(key, what, reading.sources.get(key, "default"))
    return Inspection(config, reading.sources, reading.problems, file)


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The configuration in force: file (if any), then environment overrides."""
    inspection = inspect_config(path, env)
    if inspection.problems:
        first, more = inspection.problems[0], len(inspection.problems) - 1
        also = f" (and {more} more: see 'countersign config check')" if more else ""
        raise ConfigError(" ".join(f"{first}{also}".split()))
    return inspection.config
