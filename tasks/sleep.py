"""`sleep`: waits, reporting progress at each step. For trying the service out."""

from __future__ import annotations

import asyncio
from typing import Annotated

from pydantic import Field

from tasks import Context, task


@task
async def sleep(
    ctx: Context,
    seconds: Annotated[float, Field(ge=0, le=86400)],
    steps: Annotated[int, Field(ge=1, le=10000)] = 10,
) -> dict[str, float]:
    """Wait `seconds`, reporting progress `steps` times; cancellable at once."""
    for step in range(1, steps + 1):
        await asyncio.sleep(seconds / steps)
        await ctx.progress(step * 100 / steps, f"step {step} of {steps}")
    return {"slept": seconds}
