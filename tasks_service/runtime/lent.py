"""What the service lends to its built-in tasks (`ctx.services`): settings, files, housekeeping."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from store import Store
from tasks_service.config import Settings
from tasks_service.models import is_id

log = logging.getLogger("tasks.services")


class LentServices:
    """Implements `tasks.Services` on top of the store and the data directory."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def file_path(self, file_id: str) -> Path:
        """Where an upload's bytes are; the id is checked, so it can never climb out."""
        if not is_id(file_id):
            raise ValueError(f"{file_id!r} is not a file id")
        return self.settings.data_dir / file_id

    async def purge_tasks(self, finished_before: float) -> int:
        deleted = await self.store.purge(finished_before)
        log.info("purged %d finished tasks", deleted)
        return deleted

    async def cleanup_files(self, created_before: float) -> tuple[list[str], list[str]]:
        """Delete uploads older than the cutoff that no pending or running task refers to.

        The record goes first, in one guarded statement, so a task enqueued meanwhile either
        sees no file (422) or keeps it; the bytes go after. Returns (deleted, kept in use).
        """
        deleted: list[str] = []
        in_use: list[str] = []
        for file_id in await self.store.files_created_before(created_before):
            if await self.store.forget_file_unless_in_use(file_id):
                with contextlib.suppress(FileNotFoundError):
                    self.file_path(file_id).unlink()
                deleted.append(file_id)
            else:
                in_use.append(file_id)
        log.info("cleanup: %d uploads deleted, %d kept in use", len(deleted), len(in_use))
        return deleted, in_use
