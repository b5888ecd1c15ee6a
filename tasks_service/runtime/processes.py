"""Worker processes for `process=True` tasks: started fresh, kept warm, killed for real.

Each worker is a new interpreter (`python -m tasks_service.runtime.process_child`), never a
fork of the running server with its threads and event loop. It imports the task modules once,
then runs one attempt at a time: the job goes out as JSON over a socket of its own, progress
and the result come back the same way, read by the event loop (no thread per worker).

A worker that is killed (cancel, timeout, shutdown) or dies (a signal, `os._exit`, the OOM
killer) is never reused; one that has run `max_tasks` attempts or grown past `max_rss` is
retired after its attempt. At most `size` idle workers are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tasks_service.runtime.process_wire import HEADER, decode, encode

log = logging.getLogger("tasks.processes")

_START_TIMEOUT = 60.0  # a worker must say it is ready within this (imports can be slow)
_REAP_TIMEOUT = 5.0


class WorkerDied(Exception):
    """The worker process ended while it ran an attempt; the message says how."""


class WorkerStartFailed(Exception):
    """No worker process could be started (or it never said it was ready)."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "its process stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"its process was killed by {name} (signal {-returncode})"
    return f"its process exited with code {returncode}"


class Worker:
    """One worker process and the socket to it."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.process = process
        self.pid = process.pid
        self._reader = reader
        self._writer = writer
        self.attempts = 0
        self.rss = 0
        self.broken = False  # killed, dead, or mid-attempt when given up on

    @classmethod
    async def start(cls, modules: Sequence[str], nice: int = 0) -> Worker:
        ours, theirs = socket.socketpair()
        env = {
            **os.environ,
            "TASKS_CHILD_PATH": json.dumps([p for p in sys.path if p]),
            "TASKS_CHILD_NICE": str(nice),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tasks_service.runtime.process_child",
                str(theirs.fileno()),
                str(os.getpid()),
                *modules,
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            ours.close()
            raise WorkerStartFailed(f"cannot start a worker process: {exc}") from exc
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        worker = cls(process, reader, writer)
        try:
            ready = await asyncio.wait_for(worker._receive(), _START_TIMEOUT)
        except (TimeoutError, WorkerDied) as exc:
            await worker.kill()
            raise WorkerStartFailed(f"a worker process did not start: {exc}") from exc
        if "ready" not in ready:
            await worker.kill()
            raise WorkerStartFailed(f"a worker process said {ready!r} instead of ready")
        return worker

    async def run(
        self, job: dict[str, Any], on_progress: Callable[[float, str | None], None]
    ) -> dict[str, Any]:
        """Run one attempt; its reply (`ok`, `result` or `error`), or WorkerDied."""
        self.attempts += 1
        self._send({"run": job})
        while True:
            message = await self._receive()
            if "progress" in message:
                percent, text = message["progress"]
                on_progress(percent, text)
            elif "done" in message:
                reply: dict[str, Any] = message["done"]
                self.rss = int(reply.get("rss") or 0)
                return reply

    def ask_to_stop(self, task_id: str) -> None:
        """Tell the attempt its cancel was asked for (`ctx.cancelled` turns true)."""
        with contextlib.suppress(OSError, RuntimeError):
            self._send({"cancel": task_id})

    async def kill(self) -> None:
        """SIGKILL, and wait until the process is gone (so no zombie is left)."""
        self.broken = True
        self._writer.close()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), _REAP_TIMEOUT)

    async def retire(self) -> None:
        """End an idle worker: closing its socket makes it exit; a kill if it lingers."""
        self.broken = True
        self._writer.close()
        try:
            await asyncio.wait_for(self.process.wait(), 1.0)
        except TimeoutError:
            await self.kill()

    def _send(self, message: dict[str, Any]) -> None:
        self._writer.write(encode(message))

    async def _receive(self) -> dict[str, Any]:
        try:
            header = await self._reader.readexactly(HEADER.size)
            (size,) = HEADER.unpack(header)
            body = await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.broken = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), _REAP_TIMEOUT)
            raise WorkerDied(describe_exit(self.process.returncode)) from exc
        return decode(body)


class WorkerPool:
    """The warm workers of one server process; the runner decides how many run at once."""

    def __init__(
        self,
        modules: Sequence[str],
        *,
        idle_limit: int,
        max_tasks: int,
        max_rss: int,
        nice: int = 0,
    ) -> None:
        self._modules = list(modules)
        self._nice = nice
        self._idle_limit = idle_limit
        self._max_tasks = max_tasks
        self._max_rss = max_rss
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._chores: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in (*self._idle, *self._busy)]

    async def take(self) -> Worker:
        """An idle worker, or a new one."""
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None and not worker.broken:
                self._busy.add(worker)
                return worker
        worker = await Worker.start(self._modules, self._nice)
        if self._closed:
            await worker.kill()
            raise WorkerStartFailed("the service is stopping")
        self._busy.add(worker)
        return worker

    def give_back(self, worker: Worker) -> None:
        """After an attempt: kept warm, or retired if it is worn or broken."""
        self._busy.discard(worker)
        worn = worker.attempts >= self._max_tasks or (self._max_rss and worker.rss > self._max_rss)
        if worn and not worker.broken:
            log.info(
                "worker process %d retired after %d attempts (%.0f MiB resident)",
                worker.pid,
                worker.attempts,
                worker.rss / 2**20,
            )
        if worker.broken or worn or self._closed or len(self._idle) >= self._idle_limit:
            self._later(worker.kill() if worker.broken else worker.retire())
        else:
            self._idle.append(worker)

    async def discard(self, worker: Worker) -> None:
        """Kill a worker in the middle of an attempt (cancel, timeout): it is never reused."""
        self._busy.discard(worker)
        await worker.kill()

    async def close(self) -> None:
        self._closed = True
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        await asyncio.gather(*(w.kill() for w in workers), *self._chores, return_exceptions=True)

    def _later(self, work: Any) -> None:
        chore = asyncio.ensure_future(work)
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)
