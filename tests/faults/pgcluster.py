"""A private PostgreSQL cluster a test may stop and start (FACTS.md: initdb and pg_ctl as postgres).

The shared server of COUNTERSIGN_TEST_DATABASE_URL must never be stopped by a
test; this one belongs to the test alone, on a port of its own, and is removed
with its files at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.cli_helpers import free_port

BINARIES = Path("/usr/lib/postgresql/15/bin")


def available() -> str | None:
    """Why a private cluster cannot be made here, or None."""
    if os.geteuid() != 0:
        return "a private PostgreSQL cluster needs root (to run initdb as postgres)"
    if not (BINARIES / "initdb").exists() or shutil.which("su") is None:
        return f"no PostgreSQL binaries in {BINARIES}"
    return None


class PrivateCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="countersign-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        for folder in (self.data, self.sockets):
            folder.mkdir()
        shutil.chown(self.root, "postgres")
        for path in (self.data, self.sockets):
            shutil.chown(path, "postgres")
        self._as_postgres(f"{BINARIES}/initdb -D {self.data} -A trust -U postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        self._as_postgres(f"{BINARIES}/pg_ctl -D {self.data} -l {self.log} -w -o '{options}' start")

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, as a crashed or failed-over server cuts them."""
        self._as_postgres(f"{BINARIES}/pg_ctl -D {self.data} -m fast -w stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(f"{BINARIES}/pg_ctl -D {self.data} -m immediate -w stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _as_postgres(self, command: str, *, check: bool = True) -> None:
        subprocess.run(
            ["su", "postgres", "-c", command],
            check=check,
            capture_output=True,
            timeout=120,
            cwd="/",
        )
