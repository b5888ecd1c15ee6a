"""Uploads: copied to TASKS_DATA_DIR under a generated id, hashed, size-limited.

The client's file name is kept as metadata only and never becomes part of a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import BinaryIO

from store import Store
from tasks_service.models import FileRecord, new_id

_CHUNK = 1024 * 1024
# Multipart framing around the file: its boundary lines and part headers.
MULTIPART_OVERHEAD = 64 * 1024


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")


def _copy(source: BinaryIO, target: Path, limit: int) -> tuple[int, str]:
    """Copy while hashing; stop as soon as the limit is passed (and leave nothing behind)."""
    digest = hashlib.sha256()
    size = 0
    try:
        with target.open("xb") as out:
            while chunk := source.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise
    return size, digest.hexdigest()


async def save_upload(
    source: BinaryIO, filename: str, data_dir: Path, limit: int, store: Store
) -> FileRecord:
    file_id, created_at = new_id()
    target = data_dir / file_id
    size, sha256 = await asyncio.to_thread(_copy, source, target, limit)
    record = FileRecord(file_id, filename[:1000], size, sha256, created_at)
    try:
        await store.add_file(record)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return record
