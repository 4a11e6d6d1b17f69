"""`serve` as systemd runs it: the notify socket, signals, a subset of doors, owner-only files.

The real daemon in a subprocess; the test binds the NOTIFY_SOCKET datagram
socket itself, as systemd would, and reads what the daemon sends.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import smtplib
import socket
import stat
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.cli_helpers import COMMAND, Cli, Db, clean_env, free_port, fresh_database

WAIT = 30.0


class NotifySocket:
    """systemd's side of the notify protocol: one datagram per message, timed on arrival.

    A thread reads all the time, so that each message is timed when it comes,
    not when the test gets round to looking.
    """

    def __init__(self) -> None:
        self.name = f"@countersign-test-{secrets.token_hex(6)}"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + self.name[1:])
        self.socket.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._open = True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._open:
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append((time.monotonic(), data.decode()))

    def wait_for(self, state: str, daemon: subprocess.Popen[str], timeout: float = WAIT) -> float:
        """Wait until a message holds ``state``; when it arrived (monotonic)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, message in list(self.received):
                if state in message.splitlines():
                    return at
            if daemon.poll() is not None and state != "STOPPING=1":
                pytest.fail(f"serve ended before {state}: {daemon.communicate()[1]}")
            time.sleep(0.02)
        pytest.fail(f"no {state} within {timeout}s; got {self.received}")

    def close(self) -> None:
        self._open = False
        self._reader.join()
        self.socket.close()


def listens(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def terminate(daemon: subprocess.Popen[str], timeout: float = WAIT) -> tuple[int, str, float]:
    """SIGTERM; the exit status, stderr and how long the stop took."""
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        _, stderr = daemon.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()
        _, stderr = daemon.communicate()
        pytest.fail(f"serve did not stop within {timeout}s of SIGTERM:\n{stderr}")
    return daemon.returncode, stderr, time.monotonic() - started


@pytest.fixture
def notify() -> NotifySocket:
    sock = NotifySocket()
    yield sock  # type: ignore[misc]
    sock.close()


def test_ready_after_the_doors_listen_watchdog_at_half_the_interval_stopping_on_sigterm(
    tmp_path: Path, notify: NotifySocket
) -> None:
    smtp_port, web_port = free_port(), free_port()
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    daemon = cli.start(
        "serve",
        NOTIFY_SOCKET=notify.name,
        WATCHDOG_USEC="1000000",  # a ping every 0.5 s
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp_port),
        COUNTERSIGN_WEB_PORT=str(web_port),
    )
    try:
        notify.wait_for("READY=1", daemon)
        # READY means listening: both doors answer the moment it arrives.
        assert listens(smtp_port) and listens(web_port)
        ready = next(m for _, m in notify.received if "READY=1" in m)
        assert f"MAINPID={daemon.pid}" in ready.splitlines()
        time.sleep(4)
        notify.wait_for("WATCHDOG=1", daemon)
    finally:
        code, log, _ = terminate(daemon)
    notify.wait_for("STOPPING=1", daemon, timeout=5)
    assert code == 0, log
    pings = [at for at, message in notify.received if message == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert len(pings) >= 4, notify.received
    # Half of WATCHDOG_USEC: well inside the second systemd allows, yet no flood.
    assert 0.3 < statistics.median(gaps) < 0.9, gaps
    stopping = [at for at, message in notify.received if "STOPPING=1" in message]
    assert len(stopping) == 1
    assert all("READY=1" not in m for at, m in notify.received if at > stopping[0])


def test_no_notify_socket_no_notification_and_serve_still_runs(tmp_path: Path) -> None:
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    smtp_port = free_port()
    daemon = cli.start(
        "serve",
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp_port),
        COUNTERSIGN_WEB_PORT=str(free_port()),
    )
    try:
        deadline = time.monotonic() + WAIT
        while not listens(smtp_port):
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.1)
    finally:
        code, log, _ = terminate(daemon)
    assert code == 0, log
    assert "Traceback" not in log


# --- SIGHUP under load ---------------------------------------------------------------------

REPLIES = 60


def seeded_codes(db: Db) -> list[tuple[str, str]]:
    """REPLIES requests; (admin's address, admin's code) of each, read before serve mails them."""
    from bench.seeding import seed_requests
    from countersign.store.db import Store

    store = Store(db.url)
    try:
        seed_requests(store, REPLIES * 2)
    finally:
        store.dispose()
    rows = db.query(
        "SELECT a.email, o.code FROM outbox o JOIN accounts a ON a.id = o.account_id"
        " WHERE a.email LIKE 'admin%' AND o.code IS NOT NULL"
    )
    assert len(rows) == REPLIES
    return rows


def reply(sender: str, code: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"confirm+{code}@countersign.localhost"
    message["Subject"] = "accept"
    message["Message-ID"] = f"<{secrets.token_hex(8)}@client.test>"
    message.set_content("Accept\n")
    return message


def api_status(port: int, key: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/contactChange", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_sighup_under_reply_load_loses_nothing_and_a_changed_key_works_after(
    tmp_path: Path, notify: NotifySocket
) -> None:
    db = Db(tmp_path / "var" / "countersign.db")
    fresh_database(db.path)
    codes = seeded_codes(db)
    settings = tmp_path / "countersign.toml"
    settings.write_text('shutdown_grace = "10s"\n[api]\nkeys = { crm = "old-key-0001" }\n')
    smtp_port, web_port = free_port(), free_port()
    env = clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var"), COUNTERSIGN_DATABASE_URL=db.url)
    env |= {
        "NOTIFY_SOCKET": notify.name,
        "COUNTERSIGN_INBOUND_SMTP_PORT": str(smtp_port),
        "COUNTERSIGN_WEB_PORT": str(web_port),
        "COUNTERSIGN_SCHEDULER_SWEEP_EVERY": "1s",
    }
    # The log to a file: a pipe nobody reads until the end fills up and stalls any daemon.
    stderr_path = tmp_path / "serve.log"
    stderr_file = stderr_path.open("w")
    daemon = subprocess.Popen(
        [*COMMAND, "serve"], cwd=tmp_path, env=env, stderr=stderr_file, text=True
    )
    answers: list[int] = []
    hups = 0
    try:
        notify.wait_for("READY=1", daemon)
        assert api_status(web_port, "old-key-0001") == 200

        def send(batch: list[tuple[str, str]]) -> None:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
                for sender, code in batch:
                    smtp.send_message(reply(sender, code))  # raises unless 250
                    answers.append(250)

        senders = [threading.Thread(target=send, args=(codes[i::4],)) for i in range(4)]
        for thread in senders:
            thread.start()
        while any(thread.is_alive() for thread in senders):
            daemon.send_signal(signal.SIGHUP)
            hups += 1
            time.sleep(0.1)
        for thread in senders:
            thread.join()
        settings.write_text('[api]\nkeys = { crm = "new-key-0002" }\n')
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while api_status(web_port, "new-key-0002") != 200:
            assert time.monotonic() < deadline, "the new key never worked"
            time.sleep(0.2)
        assert api_status(web_port, "old-key-0001") == 401

        def decided() -> int:
            return len(db.query("SELECT 1 FROM validators WHERE decision = 'accept'"))

        while decided() < REPLIES:
            assert time.monotonic() < deadline, f"{decided()} of {REPLIES} replies acted on"
            assert daemon.poll() is None
            time.sleep(0.2)
    finally:
        code, _, took = terminate(daemon)
        stderr_file.close()
    log = stderr_path.read_text()
    assert code == 0, log
    assert took < 10 + 10, f"stopped after {took:.1f}s (grace 10s)"
    assert hups >= 2
    assert len(answers) == REPLIES  # none refused
    assert db.count("inbox") == REPLIES  # none lost, none doubled
    assert decided() == REPLIES
    assert "reloaded: 1 API key(s) (changed)" in log
    assert "Traceback" not in log


def test_sighup_with_a_broken_configuration_keeps_the_running_one(
    tmp_path: Path, notify: NotifySocket
) -> None:
    settings = tmp_path / "countersign.toml"
    settings.write_text('[api]\nkeys = { crm = "kept-key-0001" }\n')
    web_port = free_port()
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    daemon = cli.start(
        "serve",
        "--only",
        "web",
        NOTIFY_SOCKET=notify.name,
        COUNTERSIGN_WEB_PORT=str(web_port),
    )
    try:
        notify.wait_for("READY=1", daemon)
        settings.write_text('[api]\nkeys = { crm = "new-key-0002" }\n[inbound]\nmax_bytes = -1\n')
        notify.received.clear()
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("READY=1", daemon)
        assert api_status(web_port, "kept-key-0001") == 200
        assert api_status(web_port, "new-key-0002") == 401
    finally:
        code, log, _ = terminate(daemon)
    assert code == 0, log
    assert "reload refused" in log and "inbound.max_bytes" in log


def test_only_some_doors(tmp_path: Path, notify: NotifySocket) -> None:
    smtp_port, web_port = free_port(), free_port()
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    daemon = cli.start(
        "serve",
        "--only",
        "smtp",
        NOTIFY_SOCKET=notify.name,
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp_port),
        COUNTERSIGN_WEB_PORT=str(web_port),
    )
    try:
        notify.wait_for("READY=1", daemon)
        assert listens(smtp_port)
        assert not listens(web_port)
        assert "STATUS=serving smtp" in next(m for _, m in notify.received if "READY=1" in m)
    finally:
        code, log, _ = terminate(daemon)
    assert code == 0, log
    bad = cli.run("serve", "--only", "smtp,pop3")
    assert bad.code == 2 and "pop3" in bad.stderr and len(bad.stderr_lines) == 1


def test_files_are_the_owners_alone_and_sighup_reopens_the_log_file(
    tmp_path: Path, notify: NotifySocket
) -> None:
    os.umask(0o022)  # a usual login umask: the daemon must not rely on it
    var = tmp_path / "var"
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(var)))
    cli.ok("account", "add", "a@example.org", "--zone", "EU")
    cli.ok("account", "add", "b@example.org", "--zone", "EU")
    cli.ok(
        "service",
        "add",
        "example.com",
        "--admin",
        "a@example.org",
        "--tech",
        "a@example.org",
        "--billing",
        "a@example.org",
    )
    cli.ok("change", "example.com", "--as", "a@example.org", "--tech", "b@example.org")
    log_file = tmp_path / "logs" / "countersign.log"
    log_file.parent.mkdir()
    daemon = cli.start(
        "serve",
        "--log-file",
        str(log_file),
        NOTIFY_SOCKET=notify.name,
        COUNTERSIGN_INBOUND_SMTP_PORT=str(free_port()),
        COUNTERSIGN_WEB_PORT=str(free_port()),
    )
    try:
        notify.wait_for("READY=1", daemon)
        deadline = time.monotonic() + WAIT
        while not list((var / "outbox" / "new").glob("*")):
            assert time.monotonic() < deadline, "no notice written"
            time.sleep(0.1)
        log_file.rename(log_file.with_suffix(".log.1"))  # what logrotate does
        daemon.send_signal(signal.SIGHUP)
        while not log_file.exists() or "reloaded" not in log_file.read_text():
            assert time.monotonic() < deadline, "the log file was not reopened"
            time.sleep(0.1)
    finally:
        code, stderr, _ = terminate(daemon)
    assert code == 0, stderr
    files = [var / "countersign.db", log_file, *(var / "outbox").rglob("*")]
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert stat.S_IMODE(var.stat().st_mode) == 0o700


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def test_metrics_on_a_listener_of_their_own_every_series_from_zero_and_health_per_door(
    tmp_path: Path, notify: NotifySocket
) -> None:
    smtp_port, web_port, metrics_port = free_port(), free_port(), free_port()
    cli = Cli(tmp_path, clean_env(COUNTERSIGN_DATA_DIR=str(tmp_path / "var")))
    daemon = cli.start(
        "serve",
        NOTIFY_SOCKET=notify.name,
        COUNTERSIGN_INBOUND_SMTP_PORT=str(smtp_port),
        COUNTERSIGN_WEB_PORT=str(web_port),
        COUNTERSIGN_WEB_METRICS_PORT=str(metrics_port),
    )
    try:
        notify.wait_for("READY=1", daemon)
        deadline = time.monotonic() + WAIT
        while not listens(metrics_port):
            assert time.monotonic() < deadline, "no metrics listener"
            time.sleep(0.1)
        code, scraped = get(metrics_port, "/metrics")
        assert code == 200
        for series in (
            'countersign_commands_total{channel="smtp",decision="accept"} 0.0',
            'countersign_commands_total{channel="api",decision="invalid"} 0.0',
            'countersign_mail_sent_total{outcome="failed"} 0.0',
            'countersign_mail_received_total{outcome="accepted"} 0.0',
            'countersign_queue_oldest_due_seconds{queue="outbox"} 0.0',
            "countersign_inbox_quarantined 0.0",
            "countersign_outbox_failed 0.0",
        ):
            assert series in scraped.splitlines(), series
        assert get(web_port, "/metrics")[0] == 404  # not on the public port
        code, body = get(web_port, "/healthz")
        health = json.loads(body)
        assert code == 200 and health == {
            "status": "ok",
            "store": True,
            "loops": True,
            "smtp": True,
        }
    finally:
        status, log, _ = terminate(daemon)
    assert status == 0, log
