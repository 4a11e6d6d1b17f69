"""A real, throwaway Dovecot IMAP server for tests.

Each :class:`DovecotServer` writes its own standalone config (no ``/etc/dovecot``
includes) into a private runtime directory, listens on 127.0.0.1 on a free port
with plaintext IMAP, serves one user from a Maildir, and is torn down with its
whole process group so no ``imap`` child outlives the test.

Dovecot facts that shaped this module (Debian 12, Dovecot 2.3):

* As root, mail cannot be accessed as root: the mail user is ``nobody`` and the
  internal/login users are Dovecot's own (``dovecot``/``dovenull``). Those users
  must be able to traverse the runtime directory, so it is created 0755 under
  the system temp dir, never under pytest's 0700 ``tmp_path``.
* As non-root, every service must run as the current user and the services that
  chroot by default (``anvil``, ``imap-login``) must not chroot.
* IDLE reports a new message about 500 ms after it arrives (a fixed delay in
  Dovecot), so IDLE waits need timeouts of a few seconds.
* APPEND one at a time is slow (~280/s); :meth:`DovecotServer.append` uses
  MULTIAPPEND in batches.
* A failed login is answered after ~0.5 s (the anti-brute-force delay and
  per-IP penalty are turned down as far as Dovecot allows).
* The master's own shutdown can stall for seconds; :meth:`DovecotServer.stop`
  lets the children say BYE, then kills what is left (see there).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from types import TracebackType
from typing import Self

from imapclient import IMAPClient

__all__ = [
    "DovecotServer",
    "DovecotUnavailable",
    "dovecot_binary",
    "free_port",
    "make_message",
]

# Dovecot's binaries live in /usr/sbin, which is not on a non-root user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")

# One MULTIAPPEND command per this many messages: large enough to amortise the
# round trips, small enough that a seeding of 100k messages does not build one
# gigantic command in memory.
_APPEND_BATCH = 500

# stop(): how long the processes get to exit after SIGTERM before SIGKILL,
# and how long the master may outlive its children before SIGKILL.
_STOP_GRACE = 0.5
_MASTER_GRACE = 0.05

_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]")


class DovecotUnavailable(RuntimeError):
    """The ``dovecot`` binary is not installed."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN_DIRS:
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def dovecot_binary() -> str | None:
    """Path of the ``dovecot`` master binary, or None when not installed."""
    return _which("dovecot")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago.

    There is an unavoidable race between closing this probe socket and the
    server binding the port; on a test machine it is negligible.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def make_message(
    *,
    subject: str = "Test message",
    sender: str = "sender@example.test",
    to: str = "countersign@example.test",
    body: str = "Hello.\r\n",
    message_id: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A small RFC 5322 message as CRLF bytes, ready for APPEND or SMTP DATA.

    Built by string formatting rather than ``EmailMessage`` because seeding
    thousands of messages through the email package costs more than the
    IMAP round trips it feeds.
    """
    if message_id is None:
        message_id = f"<{uuid.uuid4().hex}@example.test>"
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        *(f"{name}: {value}" for name, value in headers),
    ]
    normalised_body = body.replace("\r\n", "\n").replace("\n", "\r\n")
    return ("\r\n".join(lines) + "\r\n\r\n" + normalised_body).encode("utf-8")


@dataclass(frozen=True)
class _Identity:
    """Unix users the Dovecot services and the mail storage run as."""

    internal_user: str
    internal_group: str
    login_user: str
    mail_user: str
    mail_group: str
    mail_uid: int
    mail_gid: int
    as_root: bool


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _identity() -> _Identity:
    if os.geteuid() == 0:
        # Dovecot refuses to access mail as root, so the mailbox belongs to
        # nobody. Prefer the Debian package's dedicated service users; fall
        # back to nobody where Dovecot was installed some other way.
        nobody = pwd.getpwnam("nobody")
        nobody_group = grp.getgrgid(nobody.pw_gid).gr_name
        internal = "dovecot" if _user_exists("dovecot") else "nobody"
        internal_group = grp.getgrgid(pwd.getpwnam(internal).pw_gid).gr_name
        login = "dovenull" if _user_exists("dovenull") else "nobody"
        return _Identity(
            internal_user=internal,
            internal_group=internal_group,
            login_user=login,
            mail_user="nobody",
            mail_group=nobody_group,
            mail_uid=nobody.pw_uid,
            mail_gid=nobody.pw_gid,
            as_root=True,
        )
    me = pwd.getpwuid(os.geteuid())
    my_group = grp.getgrgid(os.getegid()).gr_name
    return _Identity(
        internal_user=me.pw_name,
        internal_group=my_group,
        login_user=me.pw_name,
        mail_user=me.pw_name,
        mail_group=my_group,
        mail_uid=me.pw_uid,
        mail_gid=os.getegid(),
        as_root=False,
    )


class DovecotServer:
    """One Dovecot instance with one user, Maildir storage and plaintext IMAP.

    Typical use (the ``dovecot`` fixture does this for you)::

        with DovecotServer() as server:
            server.append([make_message(subject="hi")])
            with server.connect() as imap:
                imap.select_folder("INBOX")

    The port is chosen once, in the constructor, so :meth:`restart` and
    :meth:`stop` followed by :meth:`start` come back on the same address.
    """

    def __init__(
        self,
        *,
        user: str = "countersign",
        password: str = "imap-test-password",
        folders: Sequence[str] = ("Processed",),
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        for name, value in (("user", user), ("password", password)):
            # Both end up in a passwd-file, where these would split fields.
            if not value or any(ch in value for ch in ":\n\r\0"):
                raise ValueError(f"{name} must be non-empty without ':' or newlines")
        found = binary or dovecot_binary()
        if found is None:
            raise DovecotUnavailable("Dovecot not installed (no 'dovecot' binary)")
        self.binary = found
        self.doveadm = _which("doveadm")
        self.user = user
        self.password = password
        self.folders = tuple(folders)
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._identity = _identity()
        self._process: subprocess.Popen[bytes] | None = None
        # A short path under the system temp dir: Dovecot's unix sockets live
        # in base_dir and sun_path is limited to 108 bytes. .ci/install-servers
        # recognises test instances by this "cs-dovecot-" prefix.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="cs-dovecot-"))
        # mkdtemp makes the dir 0700; Dovecot's unprivileged service users
        # need to traverse it to reach their sockets and the mail home.
        self.runtime_dir.chmod(0o755)
        self.config_path = self.runtime_dir / "dovecot.conf"
        self.log_path = self.runtime_dir / "dovecot.log"
        self.home = self.runtime_dir / "home" / user
        self.maildir = self.home / "Maildir"
        try:
            self._write_files()
        except BaseException:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            raise

    # -- configuration -------------------------------------------------------

    def _write_files(self) -> None:
        ident = self._identity
        for sub in ("base", "state"):
            (self.runtime_dir / sub).mkdir(mode=0o755)
        self.home.parent.mkdir(mode=0o755)
        self.home.mkdir(mode=0o700)
        if ident.as_root:
            os.chown(self.home, ident.mail_uid, ident.mail_gid)

        passwd = self.runtime_dir / "users.passwd"
        passwd.write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        # Read by the auth process, which runs as the internal user.
        passwd.chmod(0o644)

        no_chroot = "" if ident.as_root else "  chroot =\n"
        # auth-worker defaults to root; irrelevant as root, fatal as non-root.
        auth_worker = (
            "" if ident.as_root else f"service auth-worker {{\n  user = {ident.internal_user}\n}}\n"
        )
        mailboxes = "".join(
            f"  mailbox {_quote(folder)} {{\n    auto = subscribe\n  }}\n"
            for folder in self.folders
        )
        rt = self.runtime_dir
        config = f"""\
# Generated by tests/servers/dovecot.py; standalone, no /etc/dovecot includes.
base_dir = {rt}/base
state_dir = {rt}/state
instance_name = cs-dovecot-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# A failed login is answered after 2 s by default, and anvil's per-IP penalty
# (disabled in service anvil below) grows that to 4, 8, 15 s. With both
# settings a failed login takes ~0.5 s here, every time.
auth_failure_delay = 0
first_valid_uid = 1
first_valid_gid = 1
default_internal_user = {ident.internal_user}
default_internal_group = {ident.internal_group}
default_login_user = {ident.login_user}
mail_location = maildir:~/Maildir
# Test data is disposable; skipping fsync made seeding ~1.6x faster here.
mail_fsync = never

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {passwd}
}}
userdb {{
  driver = static
  args = uid={ident.mail_uid} gid={ident.mail_gid} home={rt}/home/%u
}}

namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}

protocol imap {{
  # The default of 10 per user and IP is easily hit by connection pools.
  mail_max_userip_connections = 1000
}}

service imap-login {{
{no_chroot}  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
{no_chroot}  # No per-IP auth penalty (see auth_failure_delay above).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{auth_worker}"""
        self.config_path.write_text(config)
        self.config_path.chmod(0o644)

    # -- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start Dovecot and return once it greets on the IMAP port."""
        if self.running:
            return
        with open(self.runtime_dir / "master.out", "ab") as out:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() can signal every Dovecot
                # process at once (see stop()).
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"dovecot exited with {code} at startup:\n{self.diagnostics()}")
            if self._greets():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"dovecot did not answer on {self.host}:{self.port} "
                    f"within {timeout}s:\n{self.diagnostics()}"
                )
            # Nothing to block on until the listener exists; poll briefly.
            time.sleep(0.01)

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as conn:
                return conn.recv(4).startswith(b"* OK")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot and every process it started; the port is free after.

        SIGTERM to the master alone takes seconds and leaves ``imap`` children
        (and the listening socket they inherited) alive until their clients
        go away, so a restart on the same port could fail. Signalling the
        whole group makes each child send ``* BYE Server shutting down.`` and
        exit at once, which is also what a client sees from a real restart.
        """
        process = self._process
        if process is None:
            return
        self._process = None
        pgid = process.pid  # start_new_session made the master a group leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        # SIGTERM is what makes imap processes say BYE, and they do so within
        # milliseconds. The master's own shutdown is not worth waiting for;
        # measured here it often stalls: about one stop in four it sleeps a
        # full second with every child already gone, and under load it can
        # respawn anvil/log (killed by the same group signal before it handled
        # its own) and then wait seconds for them. So: grace period, then
        # SIGKILL whatever is left, and kill a master that has outlived its
        # children early.
        started = time.monotonic()
        children_gone_at: float | None = None
        while process.poll() is None:
            now = time.monotonic()
            if _group_alive(pgid, exclude=pgid):
                children_gone_at = None
            elif children_gone_at is None:
                children_gone_at = now
            if now - started > _STOP_GRACE or (
                children_gone_at is not None and now - children_gone_at > _MASTER_GRACE
            ):
                break
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout)
        _wait_group_gone(pgid, timeout)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start on the same port: connected clients are dropped."""
        self.stop(timeout)
        self.start(timeout)

    def close(self) -> None:
        """Stop the server and delete its runtime dir (config, mail, logs)."""
        self.stop()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def diagnostics(self) -> str:
        master = self.runtime_dir / "master.out"
        out = master.read_text(errors="replace") if master.exists() else ""
        return f"--- master output ---\n{out}--- {self.log_path} ---\n{self.log_text()}"

    # -- IMAP helpers --------------------------------------------------------

    def connect(self, *, login: bool = True, timeout: float = 10.0) -> IMAPClient:
        """A new IMAPClient connection, logged in unless ``login=False``.

        IMAPClient is a context manager (logout on exit); use ``with``.
        """
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        if login:
            client.login(self.user, self.password)
        return client

    @contextlib.contextmanager
    def _session(self) -> Iterator[IMAPClient]:
        client = self.connect()
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self,
        messages: Iterable[bytes],
        folder: str = "INBOX",
        flags: Sequence[str] = (),
    ) -> list[int]:
        """Append raw messages to ``folder``; returns their UIDs in order.

        Uses MULTIAPPEND (one command per batch of 500) where the server
        offers it, since APPEND one at a time is Dovecot-bound at ~280/s.
        """
        uids: list[int] = []
        with self._session() as client:
            if client.has_capability("MULTIAPPEND"):
                batch: list[bytes] = []
                for raw in messages:
                    batch.append(raw)
                    if len(batch) >= _APPEND_BATCH:
                        uids.extend(self._multiappend(client, folder, batch, flags))
                        batch = []
                if batch:
                    uids.extend(self._multiappend(client, folder, batch, flags))
            else:
                for raw in messages:
                    response = client.append(folder, raw, flags=tuple(flags))
                    uids.extend(_appenduids(_as_bytes(response)))
        return uids

    @staticmethod
    def _multiappend(
        client: IMAPClient, folder: str, batch: list[bytes], flags: Sequence[str]
    ) -> list[int]:
        items: list[bytes | dict[str, object]] = (
            [{"msg": raw, "flags": tuple(flags)} for raw in batch] if flags else list(batch)
        )
        typ, data = client.multiappend(folder, items)
        if typ != "OK":
            raise RuntimeError(f"MULTIAPPEND to {folder!r} failed: {typ} {data!r}")
        return _appenduids(b" ".join(_as_bytes(item) for item in data))

    def uids(self, folder: str = "INBOX", criteria: str | list[str] = "ALL") -> list[int]:
        """UIDs in ``folder`` matching a SEARCH ``criteria``, ascending."""
        with self._session() as client:
            client.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in client.search(criteria))

    def fetch(self, folder: str = "INBOX", uids: Sequence[int] | None = None) -> dict[int, bytes]:
        """Raw messages by UID (all of ``folder`` by default), without setting \\Seen."""
        with self._session() as client:
            client.select_folder(folder, readonly=True)
            wanted = list(uids) if uids is not None else client.search("ALL")
            if not wanted:
                return {}
            response = client.fetch(wanted, [b"BODY.PEEK[]"])
            return {int(uid): bytes(data[b"BODY[]"]) for uid, data in response.items()}

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self._session() as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
            return int(status[b"UIDVALIDITY"])

    def change_uidvalidity(self, folder: str = "INBOX", *, renumber: bool = False) -> int:
        """Force a new UIDVALIDITY on ``folder``; returns the new value.

        Default: ``doveadm mailbox update --uid-validity`` on the live server,
        keeping the messages and their UIDs (a client must still treat every
        cached UID as void). A session with the folder selected is not told
        during IDLE (nothing within 5 s here); its next command gets
        ``* BYE IMAP session state is inconsistent, please relogin.`` and the
        connection closes, so the client sees the new value on reconnect.

        ``renumber=True``: the "mailbox rebuilt" case, where UIDs restart
        from 1 too. The server is stopped, the folder's uidlist and indexes
        are deleted and the server is started again (connected clients are
        dropped), so Dovecot rescans the Maildir as a new mailbox.
        """
        old = self.uidvalidity(folder)
        if renumber:
            self._rebuild_folder(folder)
            # Dovecot draws the rebuilt folder's UIDVALIDITY from a counter
            # that an earlier doveadm update may have made equal to ``old``.
            rebuilt = self.uidvalidity(folder)
            if rebuilt != old:
                return rebuilt
        self._doveadm_set_uidvalidity(folder, old + 1)
        new = self.uidvalidity(folder)
        if new == old:
            raise RuntimeError(f"UIDVALIDITY of {folder!r} did not change ({old})")
        return new

    def _doveadm_set_uidvalidity(self, folder: str, value: int) -> None:
        if self.doveadm is None:
            raise RuntimeError("doveadm not found (it ships with the dovecot binary)")
        subprocess.run(
            [
                self.doveadm,
                "-c",
                str(self.config_path),
                "mailbox",
                "update",
                "-u",
                self.user,
                "--uid-validity",
                str(value),
                folder,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def _folder_path(self, folder: str) -> Path:
        if folder.upper() == "INBOX":
            return self.maildir
        # Maildir++ layout: "A/B" with separator "/" is stored as ".A.B".
        return self.maildir / ("." + folder.replace("/", "."))

    def _rebuild_folder(self, folder: str) -> None:
        path = self._folder_path(folder)
        self.stop()
        for item in path.iterdir():
            if item.name == "dovecot-uidlist" or item.name.startswith("dovecot.index"):
                item.unlink()
        # The mailbox-list index caches each folder's STATUS (UIDVALIDITY
        # included); drop it so STATUS cannot answer with the old value.
        for item in self.maildir.iterdir():
            if item.name.startswith("dovecot.list.index"):
                item.unlink()
        self.start()


def _live_group_members(pgid: int) -> list[int] | None:
    """PIDs in process group ``pgid`` that are not zombies; None without /proc.

    Zombies must not count: children whose master died are reparented to
    PID 1, which may take seconds to reap them, yet they hold no sockets.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members: list[int] = []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue  # exited meanwhile
        # "pid (comm) state ppid pgrp ...": comm may contain spaces and ")".
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _group_alive(pgid: int, exclude: int | None = None) -> bool:
    members = _live_group_members(pgid)
    if members is not None:
        return any(pid != exclude for pid in members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by a user we cannot signal
    return True


def _wait_group_gone(pgid: int, timeout: float, exclude: int | None = None) -> None:
    """Poll (children of the master are not ours to wait() on) until the group
    has no live member other than ``exclude``; SIGKILL it after ``timeout``."""
    deadline = time.monotonic() + timeout
    while _group_alive(pgid, exclude):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.01)


def _quote(folder: str) -> str:
    escaped = folder.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, tuple):
        return b" ".join(_as_bytes(item) for item in value)
    return b""


def _appenduids(response: bytes) -> list[int]:
    """UIDs from a UIDPLUS ``[APPENDUID validity set]`` response code."""
    match = _APPENDUID_RE.search(response)
    if match is None:
        return []
    uids: list[int] = []
    for part in match.group(2).split(b","):
        first, _, last = part.partition(b":")
        uids.extend(range(int(first), int(last or first) + 1))
    return uids
