# SPDX-License-Identifier: MIT
"""systemd notify protocol (sd_notify) over $NOTIFY_SOCKET: one datagram per state.

Kept small instead of a dependency: the protocol is one sendto() of
newline-separated KEY=VALUE pairs to a unix datagram socket ('@' = abstract).
Without NOTIFY_SOCKET every call is a no-op, so the daemon runs the same
under systemd, in tests and on a terminal.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """Sends READY/STATUS/RELOADING/STOPPING/WATCHDOG to the service manager."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._addr = env.get("NOTIFY_SOCKET") or None
        if self._addr and self._addr.startswith("@"):
            self._addr = "\0" + self._addr[1:]
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 1e6 / 2 if usec.isdigit() and mine else None
        self._sock: socket.socket | None = None
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.dropped = 0

    def send(self, *, wait: bool = False, **fields: str | int) -> bool:
        """Send one message; False if there is no manager or it could not be reached.

        State changes (READY, RELOADING, STOPPING) pass wait=True and may block up
        to a second, since losing one stalls the manager; STATUS and WATCHDOG
        never block the packet loop and are dropped when the socket is full.
        """
        if self._sock is None or self._addr is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            self._sock.settimeout(1.0 if wait else 0.0)
            self._sock.sendto(msg.encode(), self._addr)
        except (BlockingIOError, TimeoutError):
            self.dropped += 1
            return False
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send(wait=True, READY=1, STATUS=status)

    def reloading(self) -> bool:
        return self.send(wait=True, RELOADING=1,
                         MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self) -> bool:
        return self.send(wait=True, STOPPING=1)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
