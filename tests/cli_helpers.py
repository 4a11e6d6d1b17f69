"""Running `countersign` as a real subprocess, and reading what it left in the store.

Each call starts a fresh Python (about a second, most of it imports), so tests
seed accounts and services in-process (``seed``) and use the command line for
what they are about; ``Cli.run_all`` runs independent calls side by side.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("countersign")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, str(REPO / "daemon.py")]
TIMEOUT = 60

_template: Path | None = None


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any COUNTERSIGN_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COUNTERSIGN_")}
    env.update(extra)
    return env


def fresh_database(path: Path) -> str:
    """A migrated SQLite database at ``path`` (a copy of one migrated once per run); its URL."""
    global _template
    if _template is None:
        from countersign.store.db import Store
        from countersign.store.migrate import upgrade

        folder = Path(tempfile.mkdtemp(prefix="countersign-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = folder / "template.db"
        store = Store(f"sqlite:///{template}")
        upgrade(store.engine)
        store.dispose()
        _template = template
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template, path)
    return f"sqlite:///{path}"


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def __str__(self) -> str:
        return (
            f"countersign {' '.join(self.args)} -> {self.code}\n"
            f"stdout: {self.stdout!r}\nstderr: {self.stderr!r}"
        )


class Cli:
    """`countersign` run in ``cwd`` with a fixed environment."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*COMMAND, *args],
            cwd=self.cwd,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, **env: str) -> Result:
        done = subprocess.run(
            [*COMMAND, *args],
            cwd=self.cwd,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        return Result(tuple(args), done.returncode, done.stdout, done.stderr)

    def run_all(self, calls: Iterable[Sequence[str]]) -> list[Result]:
        """Independent calls, side by side (they must not depend on one another)."""
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(lambda args: self.run(*args), calls))

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.code == 0, str(result)
        return result

    def json(self, *args: str) -> Any:
        """Run with --json, expect exit 0 and one JSON document on stdout."""
        return self.ok(*args, "--json").json

    def refused(self, *args: str) -> str:
        """Expect exit 1 with exactly one line on stderr; that line."""
        result = self.run(*args)
        assert result.code == 1, str(result)
        assert len(result.stderr_lines) == 1, str(result)
        return result.stderr_lines[0]


class Db:
    """Reading (and seeding) the store of a test, as a user's mailbox would show it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.path)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def codes(self, request_id: int) -> dict[str, str]:
        """The newest code mailed to each validator of a request: {primary email: code}."""
        rows = self.query(
            "SELECT a.email, o.code FROM outbox o JOIN accounts a ON a.id = o.account_id"
            " WHERE o.request_id = ? AND o.code IS NOT NULL ORDER BY o.id",
            request_id,
        )
        return dict(rows)  # later rows (resends) win

    def mails(self, request_id: int) -> list[tuple[str, str]]:
        """(kind, primary email) of every notice queued for a request, in order."""
        return [
            (kind, email)
            for kind, email in self.query(
                "SELECT o.kind, a.email FROM outbox o JOIN accounts a ON a.id = o.account_id"
                " WHERE o.request_id = ? ORDER BY o.id",
                request_id,
            )
        ]

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])

    def seed(
        self,
        accounts: Iterable[str | tuple[str, str]],
        services: Iterable[tuple[str, str, str, str]] = (),
    ) -> None:
        """Accounts (email, or (email, zone); zone EU by default) and services, in-process."""
        from countersign.store.db import Store
        from countersign.workflow.directory import AccountChanges, add_account, add_service

        store = Store(self.url)
        try:
            for item in accounts:
                email, zone = (item, "EU") if isinstance(item, str) else item
                add_account(store, email, AccountChanges(zone=zone, balance_due=Decimal(0)))
            for name, admin, tech, billing in services:
                add_service(store, name, admin, tech, billing)
        finally:
            store.dispose()

    def change(self, service: str, asking: str, **wanted: str) -> int:
        """Make a request in-process (``tech=..., billing=..., admin=...``); its id."""
        from countersign.config import Config
        from countersign.rules.contacts import ContactType
        from countersign.store.db import Store
        from countersign.workflow.policy import Policy
        from countersign.workflow.requests import change_contacts

        types = {"admin": ContactType.ADMIN, "tech": ContactType.TECH}
        types["billing"] = ContactType.BILLING
        store = Store(self.url)
        try:
            made = change_contacts(
                store,
                service,
                asking,
                {types[k]: v for k, v in wanted.items()},
                Policy.from_config(Config()),
            )
        finally:
            store.dispose()
        assert len(made) == 1, made
        return int(made[0]["id"])

    def cancel(self, request_id: int, asking: str) -> None:
        from countersign.config import Config
        from countersign.store.db import Store
        from countersign.workflow.policy import Policy
        from countersign.workflow.requests import cancel

        store = Store(self.url)
        try:
            cancel(store, request_id, asking, Policy.from_config(Config()))
        finally:
            store.dispose()


def side_by_side(*calls: Callable[[], Result]) -> list[Result]:
    """Run independent command lines (possibly of different ``Cli``) at the same time."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda call: call(), calls))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_cli(tmp_path: Path) -> tuple[Cli, Db]:
    """A command line over a fresh migrated database in ``tmp_path``."""
    db = Db(tmp_path / "var" / "countersign.db")
    fresh_database(db.path)
    env = clean_env(
        COUNTERSIGN_DATA_DIR=str(tmp_path / "var"),
        COUNTERSIGN_DATABASE_URL=db.url,
    )
    return Cli(tmp_path, env), db
