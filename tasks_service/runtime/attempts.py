"""One attempt of a task: run its code and decide how it ended.

`async def` tasks run as asyncio tasks, `def` tasks in a thread, `process=True` tasks in a
worker process (runtime.processes) that a cancel or a timeout really stops.

The runner owns the slots and the store; this module only turns a task's code running into
an `Outcome` (or None: the attempt was handed back at shutdown, nothing to record).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks import Context, PermanentError, TaskDefinition
from tasks_service.logs import one_line
from tasks_service.models import Outcome, Task, TaskStatus, dump_json
from tasks_service.runtime.processes import WorkerDied, WorkerPool, WorkerStartFailed

log = logging.getLogger("tasks.runner")

_RETRY_FIRST_WAIT = 1.0
_RETRY_MAX_WAIT = 300.0
# How long a process task told to stop may take before its process is killed.
STOP_GRACE = 0.3


def retry_delay(failed_attempts: int) -> float:
    """About a second after the first failure, doubling each time, capped, with jitter."""
    base = min(_RETRY_MAX_WAIT, _RETRY_FIRST_WAIT * 2 ** (failed_attempts - 1))
    return base * random.uniform(0.75, 1.25)


@dataclass(slots=True, eq=False)
class Attempt:
    """One attempt being run by this process; forgotten as soon as it is recorded."""

    task: Task
    definition: TaskDefinition
    context: Context
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # when its code returned or raised
    handle: asyncio.Task[None] | None = None
    interruptible: bool = False  # True while an asyncio cancel would land in the task's code
    cancel_requested: bool = False
    shutting_down: bool = False
    holds_slot: bool = True  # async attempts; a thread's slot is freed when the thread ends
    stopping: asyncio.Event | None = None  # set when a stop is asked (process attempts)

    def request_stop(self, *, shutdown: bool = False) -> None:
        """Ask the attempt to stop: a flag for code that checks, an interruption where one
        lands (an async task's next await; a thread's wait at shutdown only; a worker
        process is told, then killed)."""
        if shutdown:
            self.shutting_down = True
        else:
            self.cancel_requested = True
        self.context.request_cancel()
        if self.stopping is not None:
            self.stopping.set()
        if self.interruptible and self.handle and (shutdown or self.definition.is_async):
            self.handle.cancel()


async def run_async(attempt: Attempt) -> Outcome | None:
    """The task's coroutine, in this asyncio task, under its timeout."""
    task, definition = attempt.task, attempt.definition
    deadline = None if task.timeout is None else asyncio.timeout(task.timeout)
    try:
        kwargs = definition.bind(task.params)
        attempt.interruptible = True
        if deadline is None:
            result = await definition.fn(attempt.context, **kwargs)
        else:
            async with deadline:
                result = await definition.fn(attempt.context, **kwargs)
        attempt.interruptible = False
        return completed(attempt, result)
    except asyncio.CancelledError as exc:
        attempt.interruptible = False
        if attempt.cancel_requested or attempt.shutting_down:
            return None
        if _being_cancelled():
            raise
        return failed(attempt, exc)  # the task's own code cancelled itself
    except TimeoutError as exc:
        attempt.interruptible = False
        return failed(attempt, exc, timed_out=deadline is not None and deadline.expired())
    except (Exception, SystemExit) as exc:
        attempt.interruptible = False
        return failed(attempt, exc)


async def run_in_thread(attempt: Attempt, thread_ended: Callable[[], None]) -> Outcome | None:
    """The task's function in a daemon thread of its own, waited for under its timeout.

    A thread cannot be interrupted: past the timeout (or at shutdown) the attempt is decided
    without it, and `thread_ended` (which frees the slot) runs only when it really ends.
    """
    task, definition = attempt.task, attempt.definition
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bool, Any]] = loop.create_future()
    try:
        kwargs = definition.bind(task.params)
    except Exception as exc:
        return failed(attempt, exc)
    attempt.holds_slot = False  # from here on, the thread's end frees the slot

    def settle(value: tuple[bool, Any]) -> None:
        if not done.done():
            done.set_result(value)
        thread_ended()

    def body() -> None:
        try:
            value: tuple[bool, Any] = (True, definition.fn(attempt.context, **kwargs))
        except BaseException as exc:
            value = (False, exc)
        loop.call_soon_threadsafe(settle, value)

    threading.Thread(target=body, name=f"task-{task.id}", daemon=True).start()
    deadline = asyncio.timeout(task.timeout)
    try:
        attempt.interruptible = True  # only shutdown interrupts the wait; cancel is a flag
        async with deadline:
            ok, value = await done
        attempt.interruptible = False
        return completed(attempt, value) if ok else failed(attempt, value)
    except asyncio.CancelledError:
        attempt.interruptible = False
        if not attempt.shutting_down:
            raise
        log.warning("task %s (%s): its thread is abandoned at shutdown", task.id, task.name)
        return None
    except TimeoutError as exc:
        attempt.interruptible = False
        attempt.context.request_cancel()
        return failed(attempt, exc, timed_out=deadline.expired())


async def run_in_process(attempt: Attempt, pool: WorkerPool) -> Outcome | None:
    """The task's function in a worker process, which a stop or the timeout kills.

    A stop (cancel, shutdown) is first told to the worker (`ctx.cancelled`); an attempt that
    has not returned `STOP_GRACE` seconds later is killed with its process.
    """
    task, definition = attempt.task, attempt.definition
    try:
        worker = await pool.take()
    except WorkerStartFailed as exc:
        return failed(attempt, exc)
    job = {
        "task_id": task.id,
        "attempt": task.attempts,
        "module": definition.module,
        "name": definition.name,
        "params": task.params,
    }
    attempt.stopping = asyncio.Event()
    if attempt.cancel_requested or attempt.shutting_down:
        attempt.stopping.set()  # asked before the worker was ready
    running = asyncio.ensure_future(worker.run(job, attempt.context.progress))
    stopped = asyncio.ensure_future(attempt.stopping.wait())
    try:
        done, _ = await asyncio.wait(
            {running, stopped}, timeout=task.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if running not in done and stopped in done:
            worker.ask_to_stop(task.id)
            done, _ = await asyncio.wait({running}, timeout=STOP_GRACE)
            if running not in done:
                return None  # killed below; the stored cancel (or the release) decides
        if running not in done:
            attempt.context.request_cancel()
            return failed(attempt, TimeoutError(), timed_out=True)
        reply = running.result()
    except WorkerDied as exc:
        return failed(attempt, exc, plain=f"the task's process died: {exc}")
    finally:
        stopped.cancel()
        if running.done() and not worker.broken:
            pool.give_back(worker)
        else:
            running.cancel()
            await pool.discard(worker)
    if reply["ok"]:
        return Outcome(TaskStatus.COMPLETED, result_json=reply["result"])
    if reply.get("traceback"):
        log.warning(
            "task %s (%s) failed in its process:\n%s", task.id, task.name, reply["traceback"]
        )
    error = PermanentError(reply["error"]) if reply.get("permanent") else RuntimeError()
    return failed(attempt, error, plain=reply["error"])


def completed(attempt: Attempt, result: Any) -> Outcome:
    try:
        encoded = dump_json(result)
    except (TypeError, ValueError) as exc:
        error = f"the task's return value is not JSON-serialisable: {exc}"
        return failed(attempt, PermanentError(error), plain=error)
    return Outcome(TaskStatus.COMPLETED, result_json=encoded)


def failed(
    attempt: Attempt, exc: BaseException, *, timed_out: bool = False, plain: str | None = None
) -> Outcome:
    """A failed attempt: retried later while attempts remain, else the task fails."""
    task = attempt.task
    if timed_out:
        error = f"timed out after {task.timeout:g} s"
    else:
        error = plain or f"{type(exc).__name__}: {exc}"
    retry = not isinstance(exc, PermanentError) and task.counted_attempts < task.max_attempts
    where = f"task {task.id} ({task.name}) attempt {task.attempts}/{task.max_attempts}"
    exc_info = None if (timed_out or plain) else exc
    if retry:
        delay = retry_delay(task.counted_attempts)
        log.warning(
            "%s failed, retry in %.1f s: %s", where, delay, one_line(error), exc_info=exc_info
        )
        return Outcome(TaskStatus.PENDING, error=error, retry_at=time.time() + delay)
    log.error("%s failed: %s", where, one_line(error), exc_info=exc_info)
    return Outcome(TaskStatus.FAILED, error=error)


def _being_cancelled() -> bool:
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
