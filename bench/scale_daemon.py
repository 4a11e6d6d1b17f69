"""A real `countersign serve` on a scale store: the page, the API, /metrics, its memory.

Memory is the VmRSS of the daemon's process and its children (the mail-in
and composing processes, when started), at rest once it is up, and the peak
while it expires 10,000 requests made due under it with 4 clients reading.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import make_url

from bench.scale_store import KNOWN_CODE, email

KEY = "scale-bench-key"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all probes held open together, so none repeats)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants, in MB."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError):
                continue
    family, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    total = 0
    for member in family:
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def start(url: str, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    folder.mkdir(parents=True, exist_ok=True)
    web, smtp = free_ports(2)
    config = folder / "countersign.toml"
    config.write_text(
        f'data_dir = "{folder}"\n[database]\nurl = "{url}"\n'
        f"[inbound]\nsmtp_port = {smtp}\n[web]\nport = {web}\n"
        '[scheduler]\nsweep_every = "1s"\n'
        f'[api]\nkeys = {{ bench = "{KEY}" }}\n'
    )
    exe = str(Path(sys.executable).with_name("countersign"))
    env = {**os.environ, "COUNTERSIGN_CONFIG": str(config)}
    with (folder / "log").open("wb") as log:  # the child keeps its own copy of the file
        daemon = subprocess.Popen([exe, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            if get(web, "/healthz")[0] in (200, 503):
                return daemon, web
        except OSError:
            time.sleep(0.2)
    daemon.kill()
    raise SystemExit(f"serve did not answer: {(folder / 'log').read_text()[-2000:]}")


def get(
    port: int, path: str, connection: http.client.HTTPConnection | None = None
) -> tuple[int, float]:
    """(status, ms) of one GET, on ``connection`` when given (kept alive)."""
    own = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    own.request("GET", path, headers={"Authorization": f"Bearer {KEY}"})
    response = own.getresponse()
    response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if connection is None:
        own.close()
    return response.status, elapsed


def paths(accounts: int) -> dict[str, str]:
    someone = email(accounts // 2)
    return {
        "page /confirm/1": f"/confirm/1?token={KNOWN_CODE}",
        "API ids ?state=done&account=": f"/v1/contactChange?state=done&account={someone}",
        "API ids ?state=validating...": "/v1/contactChange?state=validatingByCustomers"
        f"&askingAccount={someone}",
        "API /contactChange/1": "/v1/contactChange/1",
        "/metrics": "/metrics",
    }


def http_figures(port: int, accounts: int) -> dict[str, float]:
    figures = {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for name, path in paths(accounts).items():
        status, cold = get(port, path, connection)
        assert status == 200, (name, status)
        figures[f"{name} cold"] = cold
        figures[f"{name} warm"] = statistics.median(
            get(port, path, connection)[1] for _ in range(20)
        )
    connection.close()
    return figures


def _make_due(url: str, due: int) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).replace(tzinfo=None).isoformat(" ")
    db = sqlite3.connect(str(make_url(url).database), isolation_level=None)
    db.execute(
        "UPDATE requests SET expires_at = ? WHERE id IN (SELECT id FROM requests"
        " WHERE state = 'validatingByCustomers' ORDER BY id LIMIT ?)",
        (past, due),
    )
    db.close()


def under_load(
    daemon: subprocess.Popen[bytes], port: int, url: str, accounts: int, due: int
) -> float:
    """Peak RSS (MB) while the daemon expires ``due`` requests and 4 clients read."""
    stop = threading.Event()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            for path in paths(accounts).values():
                get(port, path, connection)
        connection.close()

    clients = [threading.Thread(target=client) for _ in range(4)]
    _make_due(url, due)
    for thread in clients:
        thread.start()
    peak, deadline = 0.0, time.monotonic() + 30
    while time.monotonic() < deadline:
        peak = max(peak, tree_rss_mb(daemon.pid))
        time.sleep(0.2)
    stop.set()
    for thread in clients:
        thread.join()
    return peak


def daemon_figures(url: str, folder: Path, made: dict[str, int]) -> dict[str, float]:
    daemon, port = start(url, folder)
    try:
        time.sleep(3)
        figures = {"RSS at rest (MB)": tree_rss_mb(daemon.pid)}
        figures.update(http_figures(port, made["accounts"]))
        due = min(10_000, made["open"])
        # Under load: up to 10,000 requests expiring under it while 4 clients read.
        figures["RSS peak under load (MB)"] = under_load(daemon, port, url, made["accounts"], due)
        return figures
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
