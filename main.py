"""The application: `uvicorn main:app`. Builds the app from settings and wires its lifespan."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from types import FrameType

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import (
    STATIC_DIR,
    dashboard_router,
    files_router,
    health_router,
    install_error_handlers,
    metrics_router,
    openapi_router,
    schedules_router,
    tasks_router,
)
from auth import BearerTokenAuth
from config import Settings
from events import ChangeFeed
from host import ServiceHost
from limits import RequestLimits
from runner import Runner
from scheduler import Scheduler, collect_schedules
from service import TaskService
from store import StoreOpenError, open_store
from tasks import BUILTIN_MODULES, TaskRegistry
from uploads import MULTIPART_OVERHEAD

log = logging.getLogger("tasks")


def configure_logging(level: str) -> None:
    """Our log lines beside uvicorn's, unless the host application set up logging itself."""
    logger = logging.getLogger("tasks")
    logger.setLevel(level)
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
        logger.addHandler(handler)


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
        runner = Runner(store, registry, settings, ServiceHost(store, settings))
        scheduler = Scheduler(runner, registry, schedules)
        try:
            await runner.start()
            await scheduler.start()
            app.state.service = TaskService(store, runner, registry)
            app.state.scheduler = scheduler
            app.state.feed = feed
            with close_streams_on_signal(feed), startup_objects_frozen():
                yield
        finally:
            feed.close()
            scheduler.stop()
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
    )
    if guarded:
        app.include_router(openapi_router)
    app.state.settings = settings
    app.include_router(tasks_router)
    app.include_router(schedules_router)
    app.include_router(files_router)
    app.include_router(metrics_router)
    app.include_router(health_router)
    app.include_router(dashboard_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_handlers(app)
    upload_limit = settings.max_upload + MULTIPART_OVERHEAD

    def body_limit(path: str) -> int:
        return upload_limit if path == "/files" else settings.max_body

    if settings.api_token is not None:
        app.add_middleware(BearerTokenAuth, token=settings.api_token)
    app.add_middleware(RequestLimits, body_limit=body_limit)  # outermost: cheapest refusals
    return app


app = create_app()
