"""Settings, read once from TASKS_* environment variables and passed down explicitly."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(ValueError):
    """A TASKS_* variable holds a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    db: str = "tasks.db"
    modules: tuple[str, ...] = ()
    concurrency: int = 8
    api_token: str | None = field(default=None, repr=False)
    shutdown_grace: float = 10.0
    result_ttl: float = 604800.0
    max_body: int = 1048576
    data_dir: Path = Path("data")
    max_upload: int = 104857600
    smtp_url: str | None = field(default=None, repr=False)
    smtp_from: str | None = None
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    # Host names and CIDR ranges http_request may call although they are internal.
    http_allow: tuple[str, ...] = ()
    # A bearer token that may only read (GET); it needs api_token.
    read_token: str | None = field(default=None, repr=False)
    # Not in SPEC.md's table: knobs for operators and tests.
    # A worker process for process=True tasks is replaced after this many attempts, or once
    # its resident memory passes this many MiB (a leaking library cannot grow for ever).
    process_max_tasks: int = 1000
    process_max_memory_mb: int = 1024
    # Worker processes run this much nicer than the server, so that the API keeps its CPU
    # while they burn every core (0 to 19, as for `nice`).
    process_nice: int = 10
    sqlite_synchronous: str = "FULL"
    lease_seconds: float = 30.0
    watch_interval: float = 0.2
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.read_token is not None and self.api_token is None:
            raise SettingsError(
                "TASKS_READ_TOKEN is set but TASKS_API_TOKEN is not: without the admin token "
                "every endpoint is open to anyone, so a read-only token would guard nothing"
            )
        if self.read_token is not None and self.read_token == self.api_token:
            raise SettingsError("TASKS_READ_TOKEN must differ from TASKS_API_TOKEN")
        for entry in self.http_allow:
            _allow_entry(entry)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment; a bad value is a clear error, not a default."""
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        default = cls()
        return cls(
            db=reader.text("TASKS_DB", default.db),
            modules=tuple(m.strip() for m in env.get("TASKS_MODULES", "").split(",") if m.strip()),
            concurrency=reader.integer("TASKS_CONCURRENCY", default.concurrency, minimum=1),
            api_token=env.get("TASKS_API_TOKEN") or None,
            shutdown_grace=reader.number("TASKS_SHUTDOWN_GRACE", default.shutdown_grace),
            result_ttl=reader.number("TASKS_RESULT_TTL", default.result_ttl),
            max_body=reader.integer("TASKS_MAX_BODY", default.max_body, minimum=1),
            data_dir=Path(reader.text("TASKS_DATA_DIR", str(default.data_dir))),
            max_upload=reader.integer("TASKS_MAX_UPLOAD", default.max_upload, minimum=1),
            smtp_url=env.get("TASKS_SMTP_URL") or None,
            smtp_from=env.get("TASKS_SMTP_FROM") or None,
            processes=reader.integer("TASKS_PROCESSES", default.processes, minimum=1),
            http_allow=tuple(
                _allow_entry(entry)
                for entry in env.get("TASKS_HTTP_ALLOW", "").split(",")
                if entry.strip()
            ),
            read_token=env.get("TASKS_READ_TOKEN") or None,
            process_max_tasks=reader.integer(
                "TASKS_PROCESS_MAX_TASKS", default.process_max_tasks, minimum=1
            ),
            process_max_memory_mb=reader.integer(
                "TASKS_PROCESS_MAX_MEMORY_MB", default.process_max_memory_mb, minimum=16
            ),
            process_nice=reader.integer("TASKS_PROCESS_NICE", default.process_nice, maximum=19),
            sqlite_synchronous=reader.choice(
                "TASKS_SQLITE_SYNCHRONOUS", default.sqlite_synchronous, ("FULL", "NORMAL")
            ),
            lease_seconds=reader.number("TASKS_LEASE_SECONDS", default.lease_seconds, minimum=1),
            watch_interval=reader.number(
                "TASKS_WATCH_INTERVAL", default.watch_interval, minimum=0.01
            ),
            log_level=reader.choice(
                "TASKS_LOG_LEVEL", default.log_level, ("DEBUG", "INFO", "WARNING", "ERROR")
            ),
        )


_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*\.?")


def _allow_entry(raw: str) -> str:
    """One TASKS_HTTP_ALLOW entry, normalised: a CIDR range (an address is a /32 or /128),
    or a host name in lower case."""
    entry = raw.strip().lower()
    try:
        return str(ipaddress.ip_network(entry, strict=False))
    except ValueError:
        pass
    name = entry.rstrip(".")
    # A name's last label is never all digits: "127.1" is an address in a short form.
    if len(name) <= 253 and _HOST_NAME.fullmatch(entry) and not name.rpartition(".")[2].isdigit():
        return name
    raise SettingsError(
        f"TASKS_HTTP_ALLOW: {raw.strip()!r} is neither a host name nor a CIDR range "
        "(such as 10.0.0.0/8, 127.0.0.1/32 or hooks.internal)"
    )


@dataclass(frozen=True, slots=True)
class _Reader:
    env: Mapping[str, str]

    def text(self, name: str, default: str) -> str:
        return self.env.get(name) or default

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
        if value < minimum:
            raise SettingsError(f"{name} must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise SettingsError(f"{name} must be at most {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, *, minimum: float = 0) -> float:
        raw = self.env.get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not value >= minimum or value == float("inf"):
            raise SettingsError(f"{name} must be a finite number >= {minimum}, got {raw!r}")
        return value

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        raw = (self.env.get(name) or default).upper()
        if raw not in options:
            raise SettingsError(f"{name} must be one of {', '.join(options)}, got {raw!r}")
        return raw
