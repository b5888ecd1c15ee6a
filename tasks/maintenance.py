"""Built-in housekeeping task types."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field

from tasks import Context, task


@task
async def purge_tasks(
    ctx: Context, older_than: Annotated[float | None, Field(ge=0)] = None
) -> dict[str, Any]:
    """Delete finished tasks older than `older_than` seconds (default: TASKS_RESULT_TTL)."""
    if ctx.services is None:
        raise RuntimeError("purge_tasks needs the service that runs it")
    keep = ctx.services.settings.result_ttl if older_than is None else older_than
    deleted = await ctx.services.purge_tasks(time.time() - keep)
    return {"deleted": deleted, "older_than": keep}


@task
async def cleanup_files(ctx: Context, older_than: Annotated[float, Field(ge=0)]) -> dict[str, Any]:
    """Delete uploads older than `older_than` seconds that no pending or running task uses."""
    if ctx.services is None:
        raise RuntimeError("cleanup_files needs the service that runs it")
    deleted, in_use = await ctx.services.cleanup_files(time.time() - older_than)
    return {"deleted": deleted, "kept_in_use": in_use}
