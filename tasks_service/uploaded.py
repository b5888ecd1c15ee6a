"""Params that name an upload (`FileId`) must name one that exists: checked before a task or
a schedule is stored, so a typo is a 422 now rather than a failed task later."""

from __future__ import annotations

from typing import Any

from store import Store
from tasks import TaskDefinition
from tasks_service.models import InvalidParams


async def check_uploaded_files(
    store: Store, definition: TaskDefinition, params: dict[str, Any]
) -> None:
    """Raise InvalidParams listing each file param whose upload is not in the store."""
    errors = [
        {
            "type": "unknown_file",
            "loc": [name],
            "msg": f"no uploaded file has the id {params[name]!r}: upload it to POST /files",
            "input": params[name],
        }
        for name in definition.file_params
        if params.get(name) is not None and await store.get_file(params[name]) is None
    ]
    if errors:
        raise InvalidParams(definition.name, errors)
