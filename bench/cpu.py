"""CPU time of processes, read from /proc: where a benchmark's cores went.

On a 2-core machine the daemon, its two helper processes, the benchmark's
client and the relay sink all share the same cores, so decisions/s end to
end can never exceed ``cores / (CPU seconds per reply of all of them)``: the
figure each round prints beside its rate.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def per_item(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU ms per item (reply, notice) of each process, between two readings."""
    return {role: (after[role] - before.get(role, 0.0)) * 1000 / count for role in after}


def daemon_family(pid: int) -> dict[str, float]:
    """CPU seconds of a `serve` process and of each process it started, by role.

    The daemon starts its composing process before its mail-in process
    (runtime.py), so among its children the lower pid composes; the
    multiprocessing resource tracker is left out.
    """
    spawned = [child for child, role in children(pid) if role == "spawned"]
    roles = {"daemon": seconds(pid)}
    for role, child in zip(("composing", "mail-in"), spawned, strict=False):
        roles[role] = seconds(child)
    return roles


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, "spawned" or "tracker" or "other") of each child of ``pid``, oldest first."""
    found = sorted(child for child, parent in _parents().items() if parent == pid)
    return [(child, _role(child)) for child in found]


def database_server() -> float:
    """CPU seconds of every PostgreSQL server process on the machine (0 if none runs)."""
    return named("postgres")


def named(*commands: str) -> float:
    """CPU seconds of every process on the machine whose command name starts with one of these."""
    return sum(seconds(pid) for pid in _parents() if _command(pid).startswith(commands))


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(entry.name)] = int(fields[1])
    return found


def _role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "other"
    if b"resource_tracker" in command:
        return "tracker"
    return "spawned" if b"spawn_main" in command else "other"
