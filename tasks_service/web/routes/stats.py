"""The last hours at a glance: per-minute counts, queue depth and durations (the charts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from tasks_service.web.deps import ServiceDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import StatsOut

router = APIRouter(tags=["stats"])

Minutes = Annotated[
    int, Query(ge=1, le=1440, description="how many minutes, up to this one (1 to 1440)")
]


@router.get("/stats", response_model=StatsOut, responses=errors(401, 422))
async def get_stats(service: ServiceDep, minutes: Minutes = 60) -> Response:
    """Per minute: tasks finished by status, retries, queue depth, attempt durations; and
    each task type's sums over the window.

    The JSON comes made (StatsOut is its schema): a day is 1,440 items, and validating
    them again would take longer than reading them."""
    return Response(await service.stats_json(minutes), media_type="application/json")
