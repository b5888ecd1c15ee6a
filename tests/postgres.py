"""A throwaway PostgreSQL server for tests and bench scripts: initdb, start, crash, restart.

It runs Debian's binaries (/usr/lib/postgresql/<major>/bin; scripts/test installs them) on a free
loopback port, in a directory of the caller's. No pytest here, so bench scripts can use it too:

    with PostgresServer(Path("/tmp/pg")) as server:
        server.create_database("bench")
        url = server.url("bench")

Tests run it with fsync off (TEST_SETTINGS); benchmarks pass durable=True for PostgreSQL's
own defaults, every commit flushed to disk before it is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import stat
import subprocess
import time
import weakref
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import asyncpg

from tests.harness import free_port

INSTALL_ROOT = Path("/usr/lib/postgresql")

# Tuned for tests. What is given up is only safety against an operating-system crash: a killed
# server (kill(), a crash of its own) still recovers every acknowledged commit from the WAL.
TEST_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",  # pools of several apps and workers share one server
    "fsync": "off",  # written data reaches the OS page cache, which outlives the process
    "full_page_writes": "off",  # torn pages, likewise, need the OS to crash
    # Kept on: a commit is acknowledged only after its WAL is written (to the OS), so a
    # SIGKILL right after a commit loses nothing; off, the last ~0.2 s of commits could vanish.
    "synchronous_commit": "on",
}

# What durable=True leaves at PostgreSQL's defaults (on): a commit is on disk when acknowledged.
UNSAFE_SETTINGS = ("fsync", "full_page_writes")

# How `pg_ctl stop -m MODE` asks the postmaster to stop: these very signals.
STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,  # wait for clients to disconnect
    "fast": signal.SIGINT,  # disconnect clients, roll back, checkpoint
    "immediate": signal.SIGQUIT,  # no checkpoint: the next start runs crash recovery
}

StopMode = Literal["smart", "fast", "immediate"]


class PostgresError(RuntimeError):
    """The server could not be set up, would not start, or refused an admin statement."""


def find_bin_dir() -> Path:
    """The newest installed major version's bin directory, e.g. /usr/lib/postgresql/15/bin."""
    found = [
        path.parent
        for path in INSTALL_ROOT.glob("*/bin/initdb")
        if path.parent.parent.name.isdigit()
    ]
    if not found:
        raise PostgresError(
            f"no PostgreSQL server under {INSTALL_ROOT}/*/bin: "
            "apt-get install postgresql (bash scripts/test does it when run as root)"
        )
    return max(found, key=lambda bin_dir: int(bin_dir.parent.name))


def quote_ident(name: str) -> str:
    """A database name as an SQL identifier; over 63 bytes PostgreSQL would silently cut it."""
    if not name or len(name.encode()) > 63 or "\0" in name:
        raise ValueError(f"not a usable database name: {name!r}")
    return '"' + name.replace('"', '""') + '"'


class PostgresServer:
    """One cluster in `directory` (data/, socket/, postgres.log), served on 127.0.0.1:`port`.

    Trust authentication on loopback only, superuser `postgres`, UTF8. As root, initdb and the
    server run as the `postgres` system user, since PostgreSQL refuses to run as root.

    `durable=True` (for benchmarks) keeps fsync and full_page_writes at their defaults and lets
    initdb sync the new cluster: numbers as a production server would give, safe against an
    operating-system crash too. `settings` still override either way.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        ready_timeout: float = 30.0,
        durable: bool = False,
    ) -> None:
        self.directory = directory.resolve()
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_path = self.directory / "postgres.log"
        self.bin_dir = find_bin_dir()
        self._port_is_ours = port is None  # a port we picked may be re-picked if taken
        self.port = free_port() if port is None else port
        self.durable = durable
        base = {
            name: value
            for name, value in TEST_SETTINGS.items()
            if not (durable and name in UNSAFE_SETTINGS)
        }
        self.settings = {**base, **(settings or {})}
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_start = 0  # where this launch's lines begin in the log
        self._finalizer: weakref.finalize | None = None
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresError("running as root needs the `postgres` system user") from None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> PostgresServer:
        """initdb on first use, then start and wait until it accepts connections."""
        if self.running:
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self._user is not None:
            _let_through(self.directory, self._user)
        retries = 2
        while True:
            try:
                self._launch()
                self._wait_ready()
            except PostgresError as error:
                # Another process took the free port we had picked before the server bound it.
                taken = "Address already in use" in str(error)
                if not (taken and self._port_is_ours and retries):
                    raise
                retries -= 1
                self.port = free_port()
            else:
                self._port_is_ours = False  # URLs with this port are out now: never move it
                return self

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop as `pg_ctl stop -m MODE` does, and wait for the server to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(STOP_SIGNALS[mode])
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self._forget_process()

    def restart(self, mode: StopMode = "fast") -> PostgresServer:
        """Stop, then start again on the same port and data directory."""
        self.stop(mode)
        return self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and every one of its processes at once, as a lost machine
        or container would; the next start() runs crash recovery.

        Backends call setsid() so a process-group kill misses them: the postmaster is stopped
        first (it can fork no more), its children are listed from /proc, then all are killed.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            postmaster = self.process.pid
            os.kill(postmaster, signal.SIGSTOP)
            children = _children_of(postmaster)
            for pid in (postmaster, *children):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()
            # A new postmaster refuses to start while an old backend still holds shared memory.
            deadline = time.monotonic() + 30
            while any(_alive(pid) for pid in children):
                if time.monotonic() > deadline:
                    raise PostgresError(f"backends {children} outlived SIGKILL")
                time.sleep(0.005)
        self._forget_process()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- clients -----------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> None:
        """An empty database, from template0: nothing added to template1 leaks in, and no
        session on template1 blocks the copy. 20-80 ms, mostly creating its ~300 files (ext4
        is slower the more files were recently deleted). The default WAL_LOG strategy: as fast
        as FILE_COPY on an idle server, twice as fast with dirty buffers (FILE_COPY checkpoints).
        """
        self.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0")

    def drop_database(self, name: str) -> None:
        """Drop it even while clients are still connected (they are disconnected)."""
        self.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser. Blocking, and callable inside a running event
        loop too: asyncpg runs on a loop of its own in a helper thread (~5 ms; psql was ~25).
        """

        async def run() -> None:
            conn = await asyncpg.connect(self.url(dbname), timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        try:
            with ThreadPoolExecutor(1, thread_name_prefix="postgres-admin") as pool:
                pool.submit(lambda: asyncio.run(run())).result()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise PostgresError(f"{sql}: {error}") from error

    def log_tail(self, lines: int = 30, *, start: int = 0) -> str:
        """The server log's last lines (from byte `start` on), for error messages."""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(start)
            return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        return "(no server log)"

    # -- internals ---------------------------------------------------------------------------

    def _initdb(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            if self._user is not None:
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        if self._user is not None:
            _let_through(self.directory, self._user)
        command = [
            str(self.bin_dir / "initdb"),
            f"--pgdata={self.data_dir}",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C.UTF-8",  # the same collation on every machine, no locales package needed
            "--auth-local=trust",
            "--auth-host=trust",  # pg_hba.conf lists only loopback addresses
            "--no-instructions",
        ]
        if not self.durable:
            command.append("--no-sync")  # tests survive no OS crash anyway; saves seconds
        result = subprocess.run(
            command, cwd=self.directory, capture_output=True, check=False, **self._as_user()
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise PostgresError(f"initdb failed ({result.returncode}):\n{output}")

    def _launch(self) -> None:
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            f"unix_socket_directories={self.socket_dir}",
        ]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self.process = subprocess.Popen(
            command,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            process_group=0,  # a ^C reaches pytest alone, which stops the server in order
            **self._as_user(),
        )
        # Stop the server even if the owner forgets to (a bench script that raised, say).
        self._finalizer = weakref.finalize(self, _stop_at_exit, self.process)

    def _wait_ready(self) -> None:
        """Until postmaster.pid names our process and says "ready", as `pg_ctl start -w` does."""
        assert self.process is not None
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self._forget_process()
                raise PostgresError(
                    f"postgres exited with code {code} while starting on port {self.port}; "
                    f"{self.log_path}:\n{self.log_tail(start=self._log_start)}"
                )
            with contextlib.suppress(OSError):
                fields = pid_file.read_text().splitlines()
                if fields[:1] == [str(self.process.pid)] and fields[7:8] == ["ready   "]:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise PostgresError(
                    f"postgres not ready after {self.ready_timeout} s on port {self.port}; "
                    f"{self.log_path}:\n{self.log_tail(start=self._log_start)}"
                )
            time.sleep(0.01)

    def _forget_process(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None

    def _as_user(self) -> dict[str, object]:
        """Popen arguments dropping root for the `postgres` user (no supplementary groups)."""
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}


def _let_through(directory: Path, user: pwd.struct_passwd) -> None:
    """Give `user` the search bit on every directory above the data that would stop it.

    pytest's temporary directories are 0700 root. Where the group has no rights, the group
    becomes the user's with search only (no listing); elsewhere everyone gets search.
    """
    for path in (directory, *directory.parents):
        info = path.stat()
        mode = stat.S_IMODE(info.st_mode)
        if (
            mode & stat.S_IXOTH
            or (info.st_uid == user.pw_uid and mode & stat.S_IXUSR)
            or (info.st_gid == user.pw_gid and mode & stat.S_IXGRP)
        ):
            continue
        if mode & stat.S_IRWXG:
            os.chmod(path, mode | stat.S_IXOTH)
        else:
            os.chown(path, -1, user.pw_gid)
            os.chmod(path, mode | stat.S_IXGRP)


def _children_of(parent: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # The command may hold spaces and parentheses: fields resume after the last ")".
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie, killed but not yet reaped, does not)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_at_exit(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(STOP_SIGNALS["immediate"])
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(30)
