"""A worker process for `process=True` tasks: runs the attempts its server sends, one at a time.

Started by `runtime.processes` as `python -m tasks_service.runtime.process_child FD PID` with
a socket on FD. It imports a task's module by name, runs the function, and sends back JSON:
progress while it runs, then the result or the error. A cancel arrives as a message and
sets `ctx.cancelled`; a task that does not look is killed by the server.

It never outlives its server: the kernel sends it SIGKILL when the server dies
(PR_SET_PDEATHSIG), and a closed socket ends it too. SIGINT and SIGTERM sent to the whole
process group (Ctrl-C, a service manager) are ignored: the server decides when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

from tasks_service.runtime.process_wire import HEADER, decode, encode

_PR_SET_PDEATHSIG = 1
_PROGRESS_EVERY = 0.05  # seconds between progress frames; the last one is always sent


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGKILL when the server goes; if it is already gone, go now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


class Channel:
    """The socket to the server; frames are sent whole, from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = encode(message)
        with self._lock:
            self._sock.sendall(data)

    def receive(self) -> dict[str, Any] | None:
        """The next frame, or None once the server has closed its end."""
        header = self._exactly(HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        body = self._exactly(size)
        return None if body is None else decode(body)

    def _exactly(self, size: int) -> bytes | None:
        chunks, missing = [], size
        while missing:
            chunk = self._sock.recv(min(missing, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)


class ProgressSender:
    """The child's progress sink: at most one frame each 50 ms, the latest always kept."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel
        self._pending: tuple[float, str | None] | None = None
        self._sent_at = 0.0

    def report_progress(self, task_id: str, percent: float, message: str | None) -> None:
        self._pending = (percent, message)
        if time.monotonic() - self._sent_at >= _PROGRESS_EVERY:
            self.flush()

    def progress_committed(self) -> None:
        return None

    def flush(self) -> None:
        if self._pending is not None:
            percent, message = self._pending
            self._pending = None
            self._sent_at = time.monotonic()
            self._channel.send({"progress": [percent, message]})


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.jobs: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.context: Any = None  # the running attempt's Context, for cancels

    def listen(self) -> None:
        """The server's messages (on a thread of its own, so cancels arrive mid-task)."""
        while True:
            try:
                message = self.channel.receive()
            except OSError:
                message = None
            if message is None:  # the server closed the socket: it is done with us
                os._exit(0)
            if "run" in message:
                self.jobs.put(message["run"])
            elif "cancel" in message:
                context = self.context
                if context is not None and context.task_id == message["cancel"]:
                    context.request_cancel()

    def serve(self) -> None:
        while True:
            job = self.jobs.get()
            reply = self.run(job)
            reply["rss"] = resident_bytes()
            self.channel.send({"done": reply})

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        from tasks import Context, PermanentError
        from tasks_service.models import dump_json

        sink = ProgressSender(self.channel)
        context = Context(job["task_id"], job["attempt"], sink, None)
        self.context = context
        try:
            definition = getattr(importlib.import_module(job["module"]), job["name"])
            result = definition.fn(context, **definition.bind(job["params"]))
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt fail the attempt too
            sink.flush()
            return {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "permanent": isinstance(exc, PermanentError),
                "traceback": traceback.format_exc(),
            }
        finally:
            self.context = None
        sink.flush()
        try:
            encoded = dump_json(result)
        except (TypeError, ValueError) as exc:
            error = f"the task's return value is not JSON-serialisable: {exc}"
            return {"ok": False, "error": error, "permanent": True, "traceback": None}
        return {"ok": True, "result": encoded}


def resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def main() -> None:
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, ValueError):  # background work yields the CPU to the API
        os.nice(int(os.environ.get("TASKS_CHILD_NICE", "0")))
    sys.path[:0] = [p for p in json.loads(os.environ.get("TASKS_CHILD_PATH", "[]")) if p]
    channel = Channel(socket.socket(fileno=fd))
    for module in sys.argv[3:]:  # warm: the task modules load once, not per attempt
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    worker = Worker(channel)
    threading.Thread(target=worker.listen, name="server-messages", daemon=True).start()
    channel.send({"ready": os.getpid()})
    worker.serve()


if __name__ == "__main__":
    main()
