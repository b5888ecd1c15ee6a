"""Who a worker process is, and whether one on this machine is still alive.

On the machine itself, a dead process is known at once from its pid (and its start time,
so a reused pid is not mistaken for it); a process on another machine is presumed dead only
when its heartbeats stop for a whole lease.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path


@cache
def this_host() -> str:
    """This machine, across reboots told apart: a pid means nothing on another boot."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def process_started(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' where /proc is missing)."""
    fields = _stat_fields(pid)
    return fields[19] if fields else ""


def is_alive(pid: int, started: str) -> bool:
    fields = _stat_fields(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state, start_ticks = fields[0], fields[19]
    if state in ("Z", "X"):  # a zombie has died; only its parent has not reaped it yet
        return False
    return not started or start_ticks == started


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, which may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()
