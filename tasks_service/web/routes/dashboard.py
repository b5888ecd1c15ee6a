"""The dashboard page (its files under /static) and, behind the token, the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
# The page needs no token; the API calls it makes do.
router = APIRouter(include_in_schema=False)
openapi_router = APIRouter(include_in_schema=False)


@router.get("/")
async def dashboard() -> FileResponse:
    """The dashboard: one static page, its CSS and JavaScript under /static."""
    return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


# The page loads only its own files and talks only to this service.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@openapi_router.get("/openapi.json")
async def openapi_document(request: Request) -> dict[str, Any]:
    """The OpenAPI document, behind the token when TASKS_API_TOKEN is set."""
    document: dict[str, Any] = request.app.openapi()
    return document
