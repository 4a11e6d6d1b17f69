"""The outbox Maildir: with no relay configured, every notice becomes a file.

Idempotent: a notice's file is named from its outbox row, so a write retried
after a crash (or after a full disk) replaces the file, never adds a second.
Written to ``tmp/`` and renamed into ``new/`` (Maildir's rule: a reader never
sees half a file); ``tmp/ new/ cur/`` are made when missing, at the start and
whenever a write finds them gone (a volume mounted over the folder, say); a
failed write removes its temporary file; a full disk is retried a few times.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from countersign.gateway.mail_out.wire import Outcome, Ready

SUBFOLDERS = ("tmp", "new", "cur")
FULL_RETRIES = 3  # then the notice is retried later, with backoff, like a relay's 4xx
FULL_PAUSE = 0.2  # seconds between tries on a full disk


class MaildirTransport:
    """No relay configured: every message becomes a file in ``{data_dir}/outbox``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.host = socket.gethostname().replace("/", "_").replace(":", "_") or "localhost"
        with contextlib.suppress(OSError):  # tried again at each write, and reported there
            self._make_folders()

    async def send(
        self,
        batch: Sequence[Ready],
        on_answer: Callable[[Outcome], Awaitable[None]] | None = None,
    ) -> list[Outcome]:
        # Recorded per batch, not per file: a file written again after a kill replaces itself.
        return await asyncio.to_thread(self._write_all, batch)

    async def close(self) -> None:
        return None

    def file_name(self, outbox_id: int) -> str:
        return f"countersign-{outbox_id}.{self.host}"

    def _make_folders(self) -> None:
        for name in SUBFOLDERS:
            (self.path / name).mkdir(parents=True, exist_ok=True)

    def _write_all(self, batch: Sequence[Ready]) -> list[Outcome]:
        outcomes = []
        full: str | None = None  # the disk stayed full: the rest of the batch waits too
        for notice in batch:
            if full is not None:
                outcomes.append(Outcome(notice.outbox_id, full))
                continue
            try:
                self._write(notice)
                outcomes.append(Outcome(notice.outbox_id))
            except OSError as error:
                reason = f"cannot write to {self.path}: {error.strerror or error}"
                outcomes.append(Outcome(notice.outbox_id, reason))
                full = reason if error.errno == errno.ENOSPC else None
        return outcomes

    def _write(self, notice: Ready) -> None:
        # Local mail files end lines in LF (CRLF is for the wire): grep, mutt and
        # friends read them as text.
        data = notice.data.replace(b"\r\n", b"\n")
        name = self.file_name(notice.outbox_id)
        for attempt in range(FULL_RETRIES + 1):
            try:
                self._write_once(name, data)
                return
            except FileNotFoundError:
                if attempt:
                    raise
                self._make_folders()  # the folders went (or were never there): once more
            except OSError as error:
                if error.errno != errno.ENOSPC or attempt == FULL_RETRIES:
                    raise
                time.sleep(FULL_PAUSE)  # space may come back (a log rotated, a file removed)

    def _write_once(self, name: str, data: bytes) -> None:
        temporary = self.path / "tmp" / name
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            # Replaces a file an earlier try left in new/: the same notice, once.
            os.replace(temporary, self.path / "new" / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
