"""`countersign import` of a large file: its speed and its peak resident memory.

    flock /work/heavy.lock .venv/bin/python bench/import_memory.py [--lines 1000000]

Generates N JSON Lines as bench/import_bench.py does (half accounts, then half
services), then runs the real command, `countersign import FILE`, in a child
process under `/usr/bin/time -v` against a fresh, migrated SQLite store, and
prints its wall time, lines/s and maximum resident set size.  For scale it
then times bench/import_bench.py's bare sqlite3 baseline on the same file: the
ratio is the figure to compare between runs and machines.  The issue's target:
a 1 M-line file within 200 MB resident, at no less than the earlier speed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.import_bench import generate, run_baseline
from countersign.store.db import Store
from countersign.store.migrate import upgrade

_PEAK = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
_CPU = re.compile(r"(?:User|System) time \(seconds\): ([\d.]+)")


def run_command(source: Path, database: Path) -> tuple[float, float, int]:
    """The command in a child under /usr/bin/time -v: (wall s, CPU s, peak RSS in kB).

    CPU time (user + system) is printed too: on a machine shared with other
    work it moves less than the wall time does."""
    store = Store(f"sqlite:///{database}")
    upgrade(store.engine)
    store.dispose()
    env = {**os.environ, "COUNTERSIGN_DATABASE_URL": f"sqlite:///{database}"}
    command = [str(Path(sys.executable).with_name("countersign")), "import", str(source)]
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"import failed ({done.returncode}): {done.stderr[-2000:]}")
    peak = _PEAK.search(done.stderr)
    cpu = sum(float(found) for found in _CPU.findall(done.stderr))
    return elapsed, cpu, int(peak[1]) if peak else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000, help="JSON Lines to generate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="countersign-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "import.jsonl"
        accounts, services = generate(source, args.lines)
        total = accounts + services
        size = source.stat().st_size / 1e6
        print(f"{total} lines ({accounts} accounts, {services} services), {size:.0f} MB")
        seconds, cpu, peak_kb = run_command(source, folder / "countersign.db")
        print(f"countersign import: {seconds:.1f} s, {total / seconds:,.0f} lines/s,")
        print(f"  CPU {cpu:.1f} s (user + system), {total / cpu:,.0f} lines per CPU second,")
        print(f"  max resident {peak_kb / 1024:.0f} MB (target <= 200 MB)")
        floor = run_baseline(source, folder / "baseline.db")
        print(f"baseline (json.loads + sqlite3 executemany): {floor:.1f} s")
        print(f"import takes {seconds / floor:.2f}x the baseline's time")


if __name__ == "__main__":
    main()
