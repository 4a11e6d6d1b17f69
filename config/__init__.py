"""Configuration: a TOML file, every key overridable by the environment.

schema.py says what the keys are, loading.py reads them from the file and the
environment, checks.py holds the rules each value must satisfy, values.py the
shapes they share (durations, problems, masked secrets).  The rest of the
project knows them all from here: ``from countersign.config import Config``.
"""

from __future__ import annotations

from countersign.config.checks import (
    DURATION_KEYS,
    OPTIONAL_DURATION_KEYS,
    check_values,
    database_problem,
)
from countersign.config.loading import (
    Inspection,
    Reading,
    env_variable,
    find_config_file,
    flat_values,
    inspect_config,
    key_name,
    load_config,
)
from countersign.config.schema import (
    DEFAULT_FILE,
    ENV_PREFIX,
    NOT_KEYS,
    ApiConfig,
    ApplyConfig,
    Config,
    DatabaseConfig,
    HookEndpoint,
    HooksConfig,
    InboundConfig,
    LeasesConfig,
    LimitsConfig,
    MailConfig,
    OutboundConfig,
    RequestsConfig,
    SchedulerConfig,
    TemplatesConfig,
    WebConfig,
)
from countersign.config.values import (
    HOOK_EVENT_TYPES,
    KEY_LIMIT_NAMES,
    MASK,
    SECRET_KEYS,
    ConfigError,
    Problem,
    key_lines,
    mask,
    parse_duration,
    parse_key_limits,
)

__all__ = [
    "DEFAULT_FILE",
    "DURATION_KEYS",
    "ENV_PREFIX",
    "HOOK_EVENT_TYPES",
    "KEY_LIMIT_NAMES",
    "MASK",
    "NOT_KEYS",
    "OPTIONAL_DURATION_KEYS",
    "SECRET_KEYS",
    "ApiConfig",
    "ApplyConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "HookEndpoint",
    "HooksConfig",
    "InboundConfig",
    "Inspection",
    "LeasesConfig",
    "LimitsConfig",
    "MailConfig",
    "OutboundConfig",
    "Problem",
    "Reading",
    "RequestsConfig",
    "SchedulerConfig",
    "TemplatesConfig",
    "WebConfig",
    "check_values",
    "database_problem",
    "env_variable",
    "find_config_file",
    "flat_values",
    "inspect_config",
    "key_lines",
    "key_name",
    "load_config",
    "mask",
    "parse_duration",
    "parse_key_limits",
]
