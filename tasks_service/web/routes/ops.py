"""What operators point tools at: Prometheus metrics and the health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from tasks_service.runtime.metrics import render as render_metrics
from tasks_service.web.deps import ServiceDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import Health

metrics_router = APIRouter(tags=["metrics"])
health_router = APIRouter(tags=["health"])


@metrics_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **errors(401)},
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format: tasks by status and type, queue depth, durations, retries."""
    body = await render_metrics(service.store, service.runner.metrics, service.waits)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@health_router.get("/health", response_model=Health, responses=errors(503))
async def health(service: ServiceDep) -> dict[str, Any]:
    """200 while the database can be used, else 503."""
    await service.store.ping()
    return {"status": "ok", "worker": service.runner.worker_id, "running": service.runner.running}
