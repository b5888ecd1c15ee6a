"""`process_csv`: per-column statistics of an uploaded CSV file, read in a thread."""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from typing import Any

from tasks import Context, FileId, PermanentError, task

# Cancellation and progress are looked at every this many rows: cheap, and still often.
_CHECK_EVERY = 2000


@dataclass(slots=True)
class _Column:
    count: int = 0  # non-empty values
    numeric: bool = True
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, value: str) -> None:
        if not value.strip():
            return
        self.count += 1
        if not self.numeric:
            return
        try:
            number = float(value)
        except ValueError:
            self.numeric = False
            return
        if not math.isfinite(number):
            self.numeric = False
            return
        self.total += number
        self.low = min(self.low, number)
        self.high = max(self.high, number)

    def summary(self) -> dict[str, Any]:
        if not (self.numeric and self.count):
            return {"count": self.count}
        return {
            "count": self.count,
            "min": self.low,
            "max": self.high,
            "mean": self.total / self.count,
        }


@task
def process_csv(ctx: Context, file_id: FileId) -> dict[str, Any]:
    """Count rows, and per column the non-empty values; min, max and mean of numeric ones.

    The first row names the columns. Quoted fields may hold commas and newlines; a row with
    fewer fields than the header leaves the rest empty, extra fields are ignored (and counted
    in `ragged_rows`). The file must be UTF-8 (a BOM is fine).
    """
    if ctx.services is None:
        raise PermanentError("process_csv needs the service that runs it")
    path = ctx.services.file_path(file_id)
    try:
        size = path.stat().st_size
        raw = path.open("rb")
    except FileNotFoundError:
        raise PermanentError(f"the upload {file_id} is gone") from None
    with raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        reader = csv.reader(text)
        try:
            header = next(reader, None)
            if header is None:
                return {"rows": 0, "columns": {}, "ragged_rows": 0}
            names = _unique_names(header)
            columns = [_Column() for _ in names]
            rows = ragged = 0
            for row in reader:
                rows += 1
                if len(row) != len(names):
                    ragged += 1
                for column, value in zip(columns, row, strict=False):
                    column.add(value)
                if rows % _CHECK_EVERY == 0:
                    time.sleep(0)  # let the event loop have the GIL: the API stays responsive
                    if ctx.cancelled:
                        return {"rows": rows, "stopped": "cancelled"}
                    ctx.progress(min(99.0, raw.tell() * 100 / max(size, 1)), f"{rows} rows")
        except UnicodeDecodeError as exc:
            raise PermanentError(
                f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at about "
                f"offset {raw.tell()}): save it as UTF-8 and upload it again"
            ) from None
        except csv.Error as exc:
            raise PermanentError(f"malformed CSV at line {reader.line_num}: {exc}") from None
    ctx.progress(100, f"{rows} rows")
    return {
        "rows": rows,
        "columns": {name: c.summary() for name, c in zip(names, columns, strict=True)},
        "ragged_rows": ragged,
    }


def _unique_names(header: list[str]) -> list[str]:
    """Column names as given, with blanks named by position and repeats numbered."""
    names: list[str] = []
    seen: set[str] = set()
    for position, raw_name in enumerate(header, 1):
        base = raw_name.strip() or f"column_{position}"
        name, suffix = base, 2
        while name in seen:
            name, suffix = f"{base}_{suffix}", suffix + 1
        seen.add(name)
        names.append(name)
    return names
