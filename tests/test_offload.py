"""The spare worker process: it never outlives the daemon, and it is optional."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from countersign.gateway.offload import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]

# A daemon-like parent: starts a worker, says its pid, then waits to be killed.
PARENT = textwrap.dedent(
    """
    import multiprocessing, time
    from countersign.gateway.offload import WorkerProcess
    from countersign.gateway.mail_out.render import warm_templates

    worker = WorkerProcess("test", warm_templates, enabled=True)
    worker.start()
    while not worker.running:
        time.sleep(0.05)
    (child,) = multiprocessing.active_children()
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def gone(pid: int) -> bool:
    """No such process, or only its zombie (reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_daemon_killed_outright_leaves_no_worker_behind() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    for _ in range(600):  # the worker notices within moments; a minute at most here
        if gone(worker_pid):
            break
        time.sleep(0.1)
    else:
        os.kill(worker_pid, signal.SIGKILL)
        raise AssertionError("the worker outlived its daemon")


async def test_without_a_spare_core_the_caller_does_the_work() -> None:
    worker = WorkerProcess("test", lambda: None, enabled=False)
    worker.start()
    assert await worker.run(divmod, 7, 2) is None
    assert not worker.running
    worker.close()
