"""systemd's notify protocol: READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=...

One datagram per message to the AF_UNIX socket ``NOTIFY_SOCKET`` names (a
leading ``@`` is the abstract namespace).  A few lines, so no library: without
the variable (not under systemd, or not ``Type=notify``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("countersign.systemd")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self.watchdog_every = _watchdog_interval(env)
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *states: str) -> None:
        if not self.address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            self._socket.sendto("\n".join(states).encode(), self.address)
        except OSError as error:
            if not self._failed:  # once: a vanished socket must not fill the log
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), error)
            self._failed = True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets Type=notify-reload (systemd 253+) match this to its SIGHUP.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, as systemd asks; None when no watchdog is set for this process."""
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID", "0"))
    except ValueError:
        return None
    if usec <= 0 or (pid and pid != os.getpid()):
        return None
    return usec / 2 / 1_000_000
