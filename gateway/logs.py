"""The daemon's log: text or JSON lines, on stderr or a file, and never a secret.

Every record passes a redaction on its way out, whatever logger made it
(aiosmtpd's ``mail.log`` and uvicorn included): validation codes in any of
their forms, the ``+CODE`` of a reply address, link tokens, the configured
passwords and API keys, and authorisation headers come out as ``***``.
Libraries whose debug output carries mail bodies or SQL parameters
(aiosmtpd's DATA lines, imapclient's FETCH, SQLAlchemy's echo) are held at
INFO or above whatever ``--log-level`` says.

Under systemd (``JOURNAL_STREAM`` set) journald stamps each line itself, so
the text format leaves out the time and starts each line with the
``<N>`` syslog priority that journald reads as the line's level.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
# Read by a worker process (gateway/offload.py) to log as its daemon does; spawned
# processes inherit the environment, not the parent's logging configuration.
WORKER_FORMAT_VARIABLE = "_COUNTERSIGN_LOG_FORMAT"
REDACTED = "***"

# Whose debug lines hold secrets or mail bodies: never below INFO (aiosmtpd's DATA
# lines and RCPT TO:<confirm+CODE@...>, imapclient's literals, SQL parameters).
_NOISY = {
    "mail.log": logging.INFO,
    "imapclient": logging.INFO,
    "aiosmtplib": logging.INFO,
    "sqlalchemy": logging.WARNING,
    "multipart": logging.INFO,
    "httpx": logging.WARNING,
    "asyncio": logging.INFO,
    "apscheduler": logging.WARNING,  # a line per run of every job at INFO
    "alembic": logging.WARNING,  # store/migrate.py says in one line what it upgraded
    "flufl.bounce": logging.CRITICAL,  # trips on odd mail that reading treats as automated
}
_PATTERNS = (
    # A code in its display form or run together (base32, four groups of eight).
    re.compile(r"(?<![A-Za-z2-7])[A-Za-z2-7]{8}(?:[\s.\-]?[A-Za-z2-7]{8}){3}(?![A-Za-z2-7])"),
    re.compile(r"(?<=\+)[^@\s<>\"']+(?=@)"),  # local+CODE@domain
    re.compile(r"(?i)(?<=token=)[^&\s\"'<>]+"),
    re.compile(r"(?i)(?<=authorization: )\S+(?: \S+)?"),
    re.compile(r"(?i)(?<=bearer )\S+"),
    re.compile(r"(?i)(?<=x-api-key: )\S+"),
    re.compile(r"(?i)(?<=password=)\S+"),
    re.compile(r"(?<=://)([^:/@\s]*):[^@\s]*(?=@)"),  # a URL's user:password@
)


class Redactor:
    """Replaces every secret in a text: the patterns above, and the configured secrets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def know(self, secrets: Iterable[str | None]) -> None:
        """The literal secrets to hide (passwords, API keys); replaced as a set, e.g. on reload."""
        found = {s for s in secrets if s and len(s) >= 4}  # a 1-3 letter "secret" would eat words
        with self._lock:
            self._secrets = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text


REDACT = Redactor()


class RedactingFilter(logging.Filter):
    """On the handler, so that every record is seen, whichever logger it came from."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "mail.log" and record.levelno < logging.INFO:
            return False  # aiosmtpd's protocol trace: every DATA line, i.e. the mail body
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: the bare format
            message = str(record.msg)
        record.msg, record.args = REDACT(message), None
        return True


# Context a line may carry (``log.info(..., extra={"request": 12, "door": "smtp"})``).
CONTEXT = ("request", "door", "account", "message_id", "event", "inbox", "outbox")
_DOORS = {"countersign.smtp": "smtp", "countersign.imap": "imap", "countersign.web": "web"}
_DOORS |= {"countersign.api": "api"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    found = {key: getattr(record, key) for key in CONTEXT if getattr(record, key, None) is not None}
    if "door" not in found and record.name in _DOORS:
        found["door"] = _DOORS[record.name]
    return found


class TextFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__(JOURNAL_FORMAT if journal else TEXT_FORMAT)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{k}={v}" for k, v in _context(record).items() if k not in line)
        line = REDACT(f"{line} [{context}]" if context else line)
        return f"<{_priority(record.levelno)}>{line}" if self.journal else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (unless journald stamps it), level, logger, message, context."""

    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {}
        if not self.journal:
            document["time"] = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        document |= {"level": record.levelname.lower(), "logger": record.name}
        document["message"] = REDACT(record.getMessage())
        document |= _context(record)
        if record.exc_info:
            document["error"] = REDACT(self.formatException(record.exc_info))
        return json.dumps(document, ensure_ascii=False, default=str)


def _priority(level: int) -> int:
    # syslog: 3 err, 4 warning, 6 info, 7 debug
    return (
        3 if level >= logging.ERROR else 4 if level >= logging.WARNING else 6 if level >= 20 else 7
    )


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    format: str = "text"
    file: str | None = None  # None: stderr

    @property
    def levelno(self) -> int:
        return int(logging.getLevelNamesMapping()[self.level.upper()])


def under_journald() -> bool:
    """JOURNAL_STREAM names the device:inode of the journal; only if stderr is that stream."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        stat = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def _handler(settings: LogSettings) -> logging.Handler:
    handler: logging.Handler = (
        OwnerOnlyFileHandler(settings.file) if settings.file else logging.StreamHandler()
    )
    journal = settings.file is None and under_journald()
    formatter = JsonFormatter(journal) if settings.format == "json" else TextFormatter(journal)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    return handler


class OwnerOnlyFileHandler(logging.FileHandler):
    """A log file created 0600 (the daemon's umask may be looser), reopened on SIGHUP."""

    def _open(self) -> Any:
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(descriptor, "a", encoding=self.encoding or "utf-8")

    def reopen(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()


def configure(settings: LogSettings) -> None:
    """The whole process's logging: one handler on the root, our level, the noisy ones held."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(_handler(settings))
    apply_level(settings.level)
    os.environ[WORKER_FORMAT_VARIABLE] = settings.format


def apply_level(level: str) -> None:
    """``level`` for Countersign's loggers; libraries at INFO at most, the noisy ones held."""
    levelno = LogSettings(level=level).levelno
    logging.getLogger().setLevel(max(levelno, logging.INFO))
    logging.getLogger("countersign").setLevel(levelno)
    for name, floor in _NOISY.items():
        logging.getLogger(name).setLevel(max(levelno, floor))
    # aiosmtpd logs every SMTP command at INFO: lines by the thousand under load, so
    # only with -v (and then redacted; its DEBUG, the DATA lines, never).
    logging.getLogger("mail.log").setLevel(
        logging.INFO if levelno <= logging.DEBUG else max(levelno, logging.WARNING)
    )


def configure_worker(level: int) -> None:
    """In a worker process: the daemon's format and level, on the same stderr."""
    name = logging.getLevelName(level).lower()
    fmt = os.environ.get(WORKER_FORMAT_VARIABLE, "text")
    configure(LogSettings(level=name if name in LEVELS else "info", format=fmt))


def reopen_files() -> int:
    """SIGHUP: reopen the log file (after logrotate moved it); how many were reopened."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, OwnerOnlyFileHandler)]
    for handler in handlers:
        handler.reopen()
    return len(handlers)
