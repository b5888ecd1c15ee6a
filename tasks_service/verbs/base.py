"""The primitives every verb is written with; each engine implements them."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from typing import Any

from tasks_service.sql import Statements

# Statements to run in one transaction, in order, each with its parameters.
Steps = Sequence[tuple[str, Sequence[Any]]]


class StoreIO(abc.ABC):
    """One read, and writes queued for the group commit; the SQL in the engine's spelling."""

    sql: Statements

    @abc.abstractmethod
    async def _read(self, sql: str, params: Sequence[Any] = (), *, scan: bool = False) -> list[Any]:
        """Rows of one query; `scan`: one that grows with the table (keep it off the fast path)."""

    @abc.abstractmethod
    def _write(self, sql: str, params: Sequence[Any]) -> asyncio.Future[None]:
        """Queue one write; the future is its commit."""

    @abc.abstractmethod
    def _write_returning(self, sql: str, params: Sequence[Any]) -> asyncio.Future[list[Any]]:
        """Queue one write that returns rows; the future is its commit, with the rows."""

    @abc.abstractmethod
    async def _write_many(self, sql: str, rows: list[Sequence[Any]]) -> None:
        """Many rows of one statement, in one transaction."""

    @abc.abstractmethod
    def _write_atomically(self, steps: Steps) -> asyncio.Future[list[list[Any]]]:
        """Statements in one transaction, in order; the rows of each."""
