"""Bad disks and bad files: a full disk, a file that is not SQLite, an old schema."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tasks_service.engines import sqlite as sqlite_engine
from tests.harness import ROOT, SAMPLE_MODULES, free_port
from tests.helpers import App, AppFactory

pytestmark = pytest.mark.anyio


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs of our own, so the disk can really fill up (needs root to mount)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the file to delete to give them back."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


async def test_a_full_disk_answers_503_stores_nothing_half_and_recovers(
    make_app: AppFactory, small_disk: Path
) -> None:
    app: App = await make_app(db=str(small_disk / "tasks.db"), data_dir=small_disk / "data")
    before = await app.post_task("echo", params={"text": "before"})
    await app.wait_for(before["id"])
    filler = fill(small_disk)
    refused = 0
    accepted: list[str] = []
    for i in range(20):
        # Big enough that the write cannot fit in whatever the file system has left.
        response = await app.client.post(
            "/tasks", json={"name": "echo", "params": {"text": f"{i}" + "x" * 200_000}}
        )
        if response.status_code == 503:
            refused += 1
            assert "database" in response.json()["detail"]
            assert "full" in response.json()["detail"]
            assert response.headers["retry-after"] == "1"
        else:
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
    assert refused > 0
    filler.unlink()  # space comes back
    after = await app.post_task("echo", params={"text": "after"})
    assert (await app.wait_for(after["id"]))["status"] == "completed"
    listed = (await app.client.get("/tasks", params={"limit": 500})).json()["items"]
    texts = {t["params"]["text"][:3] for t in listed}
    assert {t["id"] for t in listed} == {before["id"], after["id"], *accepted}
    assert len(listed) == 2 + len(accepted) and "bef" in texts  # nothing half-written
    assert (await app.client.get("/health")).status_code == 200


def start(db: str) -> subprocess.CompletedProcess[str]:
    env = {"TASKS_DB": db, "TASKS_MODULES": ",".join(SAMPLE_MODULES), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "main:app", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_a_file_that_is_not_sqlite_stops_startup_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "tasks.db"
    garbage = uuid.uuid4().bytes * 300
    path.write_bytes(garbage)
    done = start(str(path))
    assert done.returncode != 0
    assert "the service cannot start" in done.stderr and "not a database" in done.stderr
    assert path.read_bytes() == garbage  # no silent new empty database
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tasks.db"]


@pytest.mark.slow
def test_a_database_that_cannot_be_opened_stops_startup(tmp_path: Path) -> None:
    done = start(str(tmp_path / "no-such-directory" / "tasks.db"))
    assert done.returncode != 0
    assert "the service cannot start" in done.stderr
    assert "unable to open database file" in done.stderr


@pytest.mark.slow
def test_a_database_from_an_older_version_is_migrated_and_its_tasks_run(
    tmp_path: Path, server_factory: object
) -> None:
    path = tmp_path / "tasks.db"
    db = sqlite3.connect(path, isolation_level=None)
    for statement in sqlite_engine.MIGRATIONS[0]:  # the first released schema, version 1
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO tasks (id, name, params, status, max_attempts, created_at, run_at) "
        "VALUES ('CR6EQWQVSKMMZCPWMPCX2D8YG8', 'echo', '{\"text\": \"old\", \"extra\": null}', "
        "'pending', 1, 1700000000.0, 1700000000.0)"
    )
    db.close()
    server = server_factory(db=path).start()  # type: ignore[operator]
    url = f"{server.url}/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8"
    for _ in range(200):
        task = httpx.get(url).json()
        if task["status"] == "completed":
            break
        time.sleep(0.05)
    assert task["status"] == "completed" and task["result"] == {"text": "old", "extra": None}
    check = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_engine.MIGRATIONS)
    check.close()
    assert "migrated to schema version" in server.log_path.read_text()
