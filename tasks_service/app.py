"""The application: `create_app(settings)` builds it from settings and wires its lifespan."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import FrameType

from fastapi import FastAPI

from scheduler import Scheduler, collect_schedules
from store import StoreOpenError
from tasks import BUILTIN_MODULES, TaskRegistry
from tasks_service.config import Settings
from tasks_service.engines import open_store
from tasks_service.logs import configure_logging
from tasks_service.runtime.changes import ChangeFeed
from tasks_service.runtime.lent import LentServices
from tasks_service.runtime.runner import Runner
from tasks_service.schedules import RuntimeSchedules
from tasks_service.service import TaskService
from tasks_service.web.auth import BearerTokenAuth
from tasks_service.web.errors import install_error_handlers
from tasks_service.web.fast_path import FastPath
from tasks_service.web.headers import SecurityHeaders
from tasks_service.web.openapi import install_openapi, operation_id
from tasks_service.web.request_limits import RequestLimits
from tasks_service.web.routes import include_routes
from tasks_service.web.routes.tasks import create_task
from tasks_service.web.uploads import MULTIPART_OVERHEAD

log = logging.getLogger("tasks")


@contextmanager
def close_streams_on_signal(feed: ChangeFeed) -> Iterator[None]:
    """End event streams as soon as SIGTERM or SIGINT arrives.

    uvicorn waits for open connections before it runs the lifespan's shutdown, so a stream
    left open would hold the server up forever. Our handler runs first, then uvicorn's.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(signum: int, frame: FrameType | None) -> None:
        feed.close()
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Leave what exists once the service has started out of the garbage collector's passes.

    The modules, classes and app objects made at startup (tens of thousands) live as long as
    the process, yet each full pass of the cyclic collector walks them all again; under a
    burst of enqueues such passes come often. Garbage is collected first; thawed at shutdown,
    so an app made and dropped in the same process (tests) is collectable again.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service, configured by `settings` (by default read from TASKS_* variables)."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    registry = TaskRegistry.from_modules([*BUILTIN_MODULES, *settings.modules])
    schedules = collect_schedules(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            store = await open_store(settings)
        except StoreOpenError as exc:
            log.critical("the service cannot start: %s", exc)
            raise
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        feed = ChangeFeed(store)
        runner = Runner(store, registry, settings, LentServices(store, settings))
        scheduler = Scheduler(runner, registry, schedules)
        try:
            await runner.start()
            await scheduler.start()
            schedule_book = RuntimeSchedules(scheduler, store, registry)
            app.state.service = TaskService(store, runner, registry, schedule_book)
            app.state.scheduler = scheduler
            app.state.feed = feed
            with close_streams_on_signal(feed), startup_objects_frozen():
                yield
        finally:
            feed.close()
            await scheduler.stop()
            await runner.stop()
            await store.close()

    guarded = settings.api_token is not None
    app = FastAPI(
        title="Tasks",
        summary="Durable, observable, cancellable background tasks, backed by SQLite.",
        version="0.1.0",
        lifespan=lifespan,
        # With a token, the OpenAPI document needs it too (and the docs UI could not send it).
        openapi_url=None if guarded else "/openapi.json",
        docs_url=None if guarded else "/docs",
        redoc_url=None if guarded else "/redoc",
        generate_unique_id_function=operation_id,
    )
    install_openapi(app, guarded=guarded)
    app.state.settings = settings
    include_routes(app, openapi_behind_token=guarded)
    install_error_handlers(app)
    upload_limit = settings.max_upload + MULTIPART_OVERHEAD

    def body_limit(path: str) -> int:
        return upload_limit if path == "/files" else settings.max_body

    # Innermost: the token check and the limits still come first.
    app.add_middleware(FastPath, method="POST", path="/tasks", endpoint=create_task)
    if settings.api_token is not None:
        app.add_middleware(
            BearerTokenAuth, token=settings.api_token, read_token=settings.read_token
        )
    app.add_middleware(RequestLimits, body_limit=body_limit)  # cheapest refusals first
    app.add_middleware(SecurityHeaders)  # outermost: every answer gets them, refusals too
    return app
