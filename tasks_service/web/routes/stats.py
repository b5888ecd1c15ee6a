"""The last hours at a glance: per-minute counts, queue depth and durations (the charts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tasks_service.web.deps import ServiceDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import StatsOut

router = APIRouter(tags=["stats"])

Minutes = Annotated[
    int, Query(ge=1, le=1440, description="how many minutes, up to this one (1 to 1440)")
]


@router.get("/stats", response_model=StatsOut, responses=errors(401, 422))
async def get_stats(service: ServiceDep, minutes: Minutes = 60) -> dict[str, Any]:
    """Per minute: tasks finished by status, retries, queue depth, attempt durations; and
    each task type's sums over the window."""
    return await service.stats(minutes)
