"""The routers of the service's HTTP API, one module per resource."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tasks_service.web.routes import dashboard, events, files, ops, schedules, stats, tasks


def include_routes(app: FastAPI, *, openapi_behind_token: bool) -> None:
    """Every route of the service on `app`; the OpenAPI document too when it needs the token
    (FastAPI's own would be open)."""
    if openapi_behind_token:
        app.include_router(dashboard.openapi_router)
    for router in (
        tasks.router,
        events.router,
        schedules.router,
        files.router,
        ops.metrics_router,
        stats.router,
        ops.health_router,
        dashboard.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
