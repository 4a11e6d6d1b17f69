"""Costs as the store grows: listings, the page, the API, /metrics, sweeps, memory, start.

    flock /work/heavy.lock .venv/bin/python bench/scale_bench.py [--scales 1000,100000,1000000]

For each scale (services; accounts = 0.3 x, open requests = 0.1 x, as many
done ones for history) it builds a SQLite store with bench/scale_store.py
(bulk sqlite3 inserts, about a minute at 1 M services: the build time is
printed), then times, in this process, each listing cold (a fresh Store, its
first call) and warm (median of 20), a /metrics scrape, and each sweep with
nothing due; then starts a real `countersign serve` on it and times the page,
the API and /metrics over HTTP, and reads the daemon's resident memory (its
process tree's VmRSS) at rest and under load (10,000 requests made due for
expiry, which its sweeps work through, while 4 clients read the page, the
API and /metrics).

At the largest scale it also times each claim with 10,000 and 100,000 rows
due (median of 5 claims, rolled back, and 3 whole batches of expire and
remind), and the cold start of `countersign services --account`, `requests`,
`request show` and `accept` against `python -c "import sqlalchemy, click"`
in the same run (median of 5 each).

Every figure is printed beside its baseline as a ratio: the largest scale
against the smallest, 100,000 due against 10,000, a command against the
import of its libraries.  Those ratios are what to compare between machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.scale_daemon import daemon_figures
from bench.scale_store import build, email
from bench.scale_sweeps import backlog_figures, idle_sweeps
from countersign.gateway import metrics
from countersign.gateway.web import api
from countersign.rules.states import State
from countersign.store.db import Store
from countersign.workflow import directory, requests

Figures = dict[str, float]


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def cold_warm(url: str, call: Callable[[Store], Any], warm: int = 20) -> tuple[float, float]:
    """ms of the first call on a fresh Store, and the median of the next ``warm``."""
    store = Store(url)
    try:
        cold = timed(lambda: call(store))
        return cold, statistics.median(timed(lambda: call(store)) for _ in range(warm))
    finally:
        store.dispose()


def listing_calls(accounts: int) -> dict[str, Callable[[Store], Any]]:
    someone = email(accounts // 2)
    return {
        "services --account": lambda s: directory.services_of(s, someone),
        "requests --account": lambda s: requests.list_requests(s, account=someone),
        "request show": lambda s: requests.show(s, 1),
        # What GET /v1/contactChange answers, by the API's own function.
        "ids by state (done)": lambda s: api._task_ids(s, None, None, someone, State.DONE),
        "ids by asking account": lambda s: api._task_ids(s, someone, None, None, None),
        "/metrics scrape": lambda s: metrics.scrape(metrics.make_registry(s)),
    }


def in_process(url: str, accounts: int) -> Figures:
    figures: Figures = {}
    for name, call in listing_calls(accounts).items():
        cold, warm = cold_warm(url, call)
        figures[f"{name} cold"], figures[f"{name} warm"] = cold, warm
    store = Store(url)
    try:
        figures.update(idle_sweeps(store))
    finally:
        store.dispose()
    return figures


def cold_starts(url: str, accounts: int) -> Figures:
    """Median wall time (ms) of each command in a fresh process, and of the libraries' import."""
    exe = str(Path(sys.executable).with_name("countersign"))
    env = {"COUNTERSIGN_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    if "PYTHONPATH" in os.environ:  # an older tree run for a before/after: its code, not ours
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    commands = {
        "import sqlalchemy, click": [sys.executable, "-c", "import sqlalchemy, click"],
        "services --account": [exe, "services", "--account", email(accounts // 2)],
        "requests --account": [exe, "requests", "--account", email(accounts // 2)],
        "request show": [exe, "request", "show", "1"],
        "accept (a wrong code)": [exe, "accept", "2", "AAAAAAAA-AAAAAAAA-AAAAAAAA-AAAAAAAA"],
    }
    figures = {}
    for name, argv in commands.items():
        runs = [
            timed(lambda a=argv: subprocess.run(a, env=env, capture_output=True)) for _ in range(5)
        ]
        figures[name] = statistics.median(runs)
    return figures


def show(title: str, rows: dict[str, Figures]) -> None:
    """One column per run, the last one's ratio to the first."""
    columns = list(rows)
    print(f"\n{title}")
    ratio = "   ratio" if len(columns) > 1 else ""
    print(f"  {'':36}" + "".join(f"{c:>14}" for c in columns) + ratio)
    for name in rows[columns[0]]:
        values = [rows[c].get(name, float("nan")) for c in columns]
        cells = "".join(f"{v:>14.2f}" for v in values)
        last = f"  {values[-1] / values[0]:6.2f}x" if ratio and values[0] else ""
        print(f"  {name:36}{cells}{last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1000,100000,1000000")
    parser.add_argument("--no-daemon", action="store_true", help="skip `serve` and its memory")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    local: dict[str, Figures] = {}
    served: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="countersign-scale-") as tmp:
        for scale in scales:
            path = Path(tmp) / f"scale{scale}.db"
            started = time.perf_counter()
            made = build(path, scale)
            size = path.stat().st_size / 1e6
            print(f"built {made} in {time.perf_counter() - started:.1f} s ({size:.0f} MB)")
            url = f"sqlite:///{path}"
            local[f"{scale:,} svc"] = in_process(url, made["accounts"])
            if scale == scales[-1]:
                # Before the daemon's run, which expires 10,000 of the open requests.
                backlog = backlog_figures(url)
                starts = cold_starts(url, made["accounts"])
            if not args.no_daemon:
                served[f"{scale:,} svc"] = daemon_figures(url, Path(tmp) / f"d{scale}", made)
            for leftover in Path(tmp).glob(f"{path.name}*"):  # the file, its WAL: disk is short
                leftover.unlink()
    show("in process, ms (ratio: largest scale / smallest)", local)
    if served:
        show("through `countersign serve`, ms (RSS in MB)", served)
    show(
        f"sweeps at {scales[-1]:,} services, ms a claim or batch (ratio: 100,000 due / 10,000)",
        backlog,
    )
    base = starts["import sqlalchemy, click"]
    print(f"\ncold start at {scales[-1]:,} services, ms (ratio to the import; target <= 3x)")
    for name, value in starts.items():
        print(f"  {name:36}{value:>14.0f}  {value / base:5.2f}x")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
