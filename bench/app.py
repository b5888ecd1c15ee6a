"""The service plus two baseline routes, so benchmarks compare within one uvicorn.

    uvicorn bench.app:app

POST /bench/bare        a bare FastAPI POST endpoint: parses the JSON body, answers 200
POST /bench/background  FastAPI's BackgroundTasks: runs the same no-op after the answer,
                        keeping nothing
GET  /bench/background  how many of those have run, and when (wall clock) the last started
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import BackgroundTasks, FastAPI

from tasks_service import create_app

app: FastAPI = create_app()
background_runs = 0
background_started = 0.0


@app.post("/bench/bare")
async def bare(body: dict[str, Any]) -> dict[str, bool]:
    return {"ok": True}


async def noop() -> None:
    global background_runs, background_started
    background_started = time.time()
    background_runs += 1


@app.post("/bench/background", status_code=202)
async def background(body: dict[str, Any], tasks: BackgroundTasks) -> dict[str, bool]:
    tasks.add_task(noop)
    return {"ok": True}


@app.get("/bench/background")
async def background_count() -> dict[str, float]:
    return {"runs": background_runs, "last_started": background_started}
