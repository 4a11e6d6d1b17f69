"""Engines and transactions over SQLite (default) or PostgreSQL.

Writes on SQLite begin with ``BEGIN IMMEDIATE``: SQLite lets one writer in at a
time anyway, and taking the write lock up front stops two processes from both
reading "no open request" and then both writing one.  On PostgreSQL the
workflow locks the rows it decides on (``FOR UPDATE``).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from countersign.store import audit_log, tallies
from countersign.store.health import Health

WAKE = "wake"  # session.info key: the set of topics a transaction gives new work to
APPENDS = "appends"  # session.info key: rows to insert, by table, before the next statement


def wake(session: Session, topic: str) -> None:
    """Ask for ``topic``'s listeners to run once this transaction commits."""
    session.info.setdefault(WAKE, set()).add(topic)


def unwake(session: Session, topic: str) -> None:
    """Take back a :func:`wake`: this transaction itself did the work it announced."""
    session.info.get(WAKE, set()).discard(topic)


def append(session: Session, model: type[Any], row: dict[str, Any]) -> None:
    """Insert ``row`` into ``model``'s table with this transaction, without an ORM object.

    For rows nothing reads back in the transaction that writes them (the audit
    trail): they are inserted all at once, by one executemany per table, just
    before the session's next statement or commit, so every later query sees
    them, while a batch that queries nothing between its acts pays one
    statement instead of one ORM insert per row.
    """
    session.info.setdefault(APPENDS, {}).setdefault(model.__table__, []).append(row)


def _insert_appends(session: Session) -> None:
    pending = session.info.pop(APPENDS, None)
    for table, rows in (pending or {}).items():
        session.connection().execute(table.insert(), rows)
        if table.name == "events":
            audit_log.inserted(session, rows)


def _before_statement(state: ORMExecuteState) -> None:
    if APPENDS in state.session.info:
        _insert_appends(state.session)


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # What is deleted or overwritten (a sent notice's code) is zeroed in the
        # file, not left in a free page for anyone reading the file to find.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


# A pooled connection idle longer than this is pinged before use (the server may have
# restarted meanwhile); one in steady use is not: a ping per transaction was a round
# trip more for every write, and a connection that breaks mid-use is an outage anyway.
IDLE_PING_SECONDS = 1.0


def _postgresql_engine(url: str) -> Engine:
    engine = create_engine(url, pool_size=8, max_overflow=8)

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the driver's own: the pool then opens a fresh connection
            raise exc.DisconnectionError("connection lost while idle") from error

    return engine


def make_engine(url: str) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return _postgresql_engine(url)


NOTIFY_CHANNEL = "countersign"


def _notify(session: Session) -> None:
    """Tell other processes' listeners (PostgreSQL delivers a NOTIFY only on commit).

    All of the transaction's topics in one statement: a round trip each cost
    intake and the sweeps more than the rest of their write.
    """
    topics = sorted(session.info.get(WAKE, ()))
    if not topics:
        return
    calls = ", ".join(f"pg_notify(:channel, :topic{n})" for n in range(len(topics)))
    values = {f"topic{n}": topic for n, topic in enumerate(topics)}
    session.execute(text(f"SELECT {calls}"), {"channel": NOTIFY_CHANNEL, **values})


class SqliteWriter:
    """SQLite's one writer at a time, taken in turn without its busy handler's sleeps.

    Threads of this process take turns on a lock; processes (the command line,
    the mail-in process, another daemon) on an flock of a file beside the
    database, which the kernel hands to the next waiter the moment it is
    released.  SQLite's own busy handler sleeps up to 100 ms between retries:
    under load that cut mail intake to a third.
    """

    def __init__(self, database: str | None) -> None:
        self._threads = threading.RLock()
        self._depth = 0  # this process's nesting: the file is locked by the outermost turn
        self._path = f"{database}.writer" if database and database != ":memory:" else None
        self._fd: int | None = None
        self._pid = 0

    @contextmanager
    def turn(self) -> Iterator[None]:
        with self._threads:
            self._depth += 1
            outermost = self._depth == 1
            try:
                if outermost:
                    self._lock_file()
                yield
            finally:
                if outermost:
                    self._unlock_file()
                self._depth -= 1

    def _lock_file(self) -> None:
        if self._path is None:
            return
        if self._fd is None or self._pid != os.getpid():
            # A forked child shares its parent's open file, and with it the lock: its own.
            self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def _unlock_file(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


class Store:
    """The only way in: short write and read transactions, and commit hooks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name
        self.health = Health()  # lost / back, logged once each (store/health.py)
        self._writer = sessionmaker(
            self.engine.execution_options(immediate=True), expire_on_commit=False
        )
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._writer, "do_orm_execute", _before_statement)
        event.listen(self._writer, "before_commit", _insert_appends)
        event.listen(self._writer, "before_commit", tallies.write_pending)
        event.listen(self._writer, "after_commit", audit_log.committed)
        event.listen(self._writer, "after_rollback", audit_log.rolled_back)
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        # Put in every write session's info: what the acts must know of the outside
        # (the webhook targets an event is queued for: workflow/hooks.py).
        self.session_info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._sqlite_writer = (
            SqliteWriter(make_url(url).database) if self.dialect == "sqlite" else None
        )

    def on_commit(self, topic: str, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every commit that woke ``topic`` (it must be thread-safe).

        Commits of this process call it directly; those of other processes (the
        command line, another daemon) reach it through store.watch.CommitWatcher.
        """
        with self._lock:
            self._listeners.setdefault(topic, []).append(listener)

    def fire(self, topic: str | None = None) -> None:
        """Run the listeners of ``topic``, or of every topic when it is not known."""
        with self._lock:
            topics = [topic] if topic is not None else list(self._listeners)
            listeners = [fn for name in topics for fn in self._listeners.get(name, ())]
        for listener in listeners:
            listener()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._write_turn(), self._writer() as session, session.begin():
            session.info.update(self.session_info)
            yield session
            if self.dialect == "postgresql":
                _notify(session)
        for topic in session.info.get(WAKE, ()):
            self.fire(topic)

    @contextmanager
    def _write_turn(self) -> Iterator[None]:
        if self._sqlite_writer is None:
            yield
            return
        with self._sqlite_writer.turn():
            yield

    def scrub(self) -> bool:
        """SQLite: move the write-ahead log into the database and empty it.

        The WAL keeps the old copies of every page written since the last
        checkpoint, the cleared codes of sent notices among them.  False when a
        reader kept the log from being emptied (the next scrub finishes it).
        """
        if self._sqlite_writer is None:
            return True  # PostgreSQL: see docs/security.md (dead rows until VACUUM)
        with self._write_turn():
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                busy, _, _ = cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                cursor.close()
            finally:
                raw.close()
        return not busy

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        if self._sqlite_writer is not None:
            self._sqlite_writer.close()
