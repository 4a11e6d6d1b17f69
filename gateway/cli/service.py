"""What systemd and an operator's signals see of a running daemon.

- systemd: READY=1 once every enabled door listens, WATCHDOG=1 at half of
  WATCHDOG_USEC while the loop is alive, RELOADING=1 / READY=1 around a
  reload, STOPPING=1 when a stop begins (gateway/systemd.py speaks the protocol).
- SIGTERM and SIGINT stop: the work in hand drains, within ``shutdown_grace``.
- SIGHUP reloads what can change without dropping a connection: the log file
  is reopened (after logrotate), and the configuration read again for the API
  keys, the log level and the secrets the log hides; the notice templates are
  read again on next use.  A configuration that no longer checks is refused
  and the running one kept.  Every reload says in the log what it did.
- SIGUSR1 and SIGUSR2, which would end a Python process at once, are logged and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from countersign.config import Config, flat_values, inspect_config
from countersign.gateway import logs
from countersign.gateway.mail_out import render
from countersign.gateway.systemd import Notifier

log = logging.getLogger("countersign")
DOORS = frozenset({"smtp", "imap", "web", "sweeps"})


@dataclass(frozen=True)
class ServeOptions:
    config_path: str | None = None
    doors: frozenset[str] = DOORS
    migrate: bool = False  # PostgreSQL: upgrade the schema first (SQLite always does)
    log_level: str | None = None  # from the command line: wins over the file's, reload or not


@dataclass
class Service:
    """The running daemon's controls: signals in, notifications out, live settings."""

    config: Config
    options: ServeOptions
    stop: asyncio.Event
    notifier: Notifier = field(default_factory=Notifier)
    # Handed to the API by reference: a reload changes the keys in place.
    api_keys: dict[str, str] = field(default_factory=dict)
    secrets: Callable[[Config], Iterable[str | None]] = lambda _config: ()

    def __post_init__(self) -> None:
        self.api_keys.update(self.config.api.keys)

    def install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            loop.add_signal_handler(signum, log.info, "%s ignored", signal.Signals(signum).name)

    def ready(self, listening: Iterable[str]) -> None:
        what = ", ".join(listening) or "nothing"
        log.info("ready: %s", what)
        self.notifier.ready(f"serving {what}")

    async def watchdog(self) -> None:
        """WATCHDOG=1 every half WATCHDOG_USEC, for as long as the loop is not stuck."""
        every = self.notifier.watchdog_every
        if every is None:
            return
        while not self.stop.is_set():
            self.notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), every)

    def stopping(self) -> None:
        self.notifier.stopping()

    def reload(self) -> None:
        """SIGHUP, on the loop: nothing here blocks long or closes a listener."""
        self.notifier.reloading()
        reopened = logs.reopen_files()
        inspection = inspect_config(self.options.config_path)
        if inspection.problems:
            log.error(
                "reload refused, configuration kept as it was: %s (%d problem(s))",
                inspection.problems[0],
                len(inspection.problems),
            )
            self.notifier.ready("serving (reload refused)")
            return
        config = inspection.config
        changed_keys = dict(config.api.keys) != self.api_keys
        self.api_keys.clear()
        self.api_keys.update(config.api.keys)
        level = self.options.log_level or config.log_level
        logs.apply_level(level)
        logs.REDACT.know(self.secrets(config))
        render.reload_templates()
        later = restart_needed(self.config, config)
        self.config = config
        log.info(
            "reloaded: %d API key(s)%s, log level %s, templates, %d log file(s) reopened%s",
            len(self.api_keys),
            " (changed)" if changed_keys else "",
            level,
            reopened,
            f"; needs a restart to take effect: {', '.join(later)}" if later else "",
        )
        self.notifier.ready("serving (reloaded)")


RELOADABLE = frozenset({"api.keys", "log_level"})


def restart_needed(before: Config, after: Config) -> list[str]:
    """The keys whose change a reload does not apply (ports, database, ...)."""
    old, new = flat_values(before), flat_values(after)
    return sorted(key for key in new if key not in RELOADABLE and old.get(key) != new[key])
