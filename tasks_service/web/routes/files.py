"""The upload routes: store a file for tasks to use by id, and read its metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, UploadFile

from tasks_service.models import is_id
from tasks_service.web.deps import ServiceDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import FileOut
from tasks_service.web.uploads import UploadTooLarge, save_upload

router = APIRouter(tags=["files"])


@router.post(
    "/files", status_code=201, response_model=FileOut, responses=errors(400, 401, 413, 422)
)
async def upload_file(request: Request, file: UploadFile, service: ServiceDep) -> dict[str, Any]:
    """Upload a file (multipart, field `file`) for tasks to use by its id."""
    settings = request.app.state.settings
    try:
        record = await save_upload(
            file.file, file.filename or "", settings.data_dir, settings.max_upload, service.store
        )
    except UploadTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    return record.to_json()


@router.get("/files/{file_id}", response_model=FileOut, responses=errors(401, 404))
async def get_file(file_id: str, service: ServiceDep) -> dict[str, Any]:
    """An upload's metadata."""
    record = await service.store.get_file(file_id) if is_id(file_id) else None
    if record is None:
        raise HTTPException(404, f"no uploaded file with id {file_id!r}")
    return record.to_json()
