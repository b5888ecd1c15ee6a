"""Uploads, process_csv, cleanup_files, and tasks started from any route with AddTask."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks_service import AddTask, create_app
from tasks_service.config import Settings
from tests import sample_tasks
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]


async def upload(app: App, content: bytes, filename: str = "data.csv") -> dict[str, Any]:
    response = await app.client.post("/files", files={"file": (filename, content, "text/csv")})
    assert response.status_code == 201, response.text
    return response.json()


def stored_files(settings: Settings) -> list[Path]:
    return sorted(settings.data_dir.iterdir()) if settings.data_dir.exists() else []


# -- uploads ---------------------------------------------------------------------------------


async def test_upload_keeps_the_bytes_under_a_generated_id(app: App, settings: Settings) -> None:
    content = b"a,b\n1,2\n"
    record = await upload(app, content)
    assert record["filename"] == "data.csv"
    assert record["size"] == len(content)
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["created_at"].endswith("Z")
    assert stored_files(settings) == [settings.data_dir / record["id"]]
    assert (settings.data_dir / record["id"]).read_bytes() == content
    again = await app.client.get(f"/files/{record['id']}")
    assert again.status_code == 200 and again.json() == record


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..\\..\\boot.ini", "a/../../b", "\u202ecod.exe"]
)
async def test_a_hostile_file_name_is_metadata_only(
    app: App, settings: Settings, name: str
) -> None:
    record = await upload(app, b"x", filename=name)
    assert record["filename"] == name
    files = stored_files(settings)
    assert files == [settings.data_dir / record["id"]]
    assert all(path.parent == settings.data_dir for path in files)


async def test_an_oversize_upload_is_413_and_leaves_nothing(
    make_app: AppFactory, settings: Settings
) -> None:
    app = await make_app(max_upload=1000)
    response = await app.client.post("/files", files={"file": ("big", b"x" * 5000)})
    assert response.status_code == 413
    assert stored_files(settings) == []
    # Just over the limit, within the multipart allowance: caught while copying.
    response = await app.client.post("/files", files={"file": ("big", b"y" * 1001)})
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]
    assert stored_files(settings) == []
    exact = await app.client.post("/files", files={"file": ("ok", b"z" * 1000)})
    assert exact.status_code == 201


async def test_unknown_or_malformed_file_ids_are_404(app: App) -> None:
    for file_id in ("CR6EQWQVSKMMZCPWMPCX2D8YG8", "../tasks.db", "nope"):
        assert (await app.client.get(f"/files/{file_id}")).status_code == 404


async def test_upload_without_a_file_field_is_422(app: App, settings: Settings) -> None:
    response = await app.client.post("/files", data={"other": "x"})
    assert response.status_code == 422
    response = await app.client.post("/files", content=b"not multipart")
    assert 400 <= response.status_code < 500
    assert stored_files(settings) == []


async def test_a_task_naming_an_unknown_file_is_422(app: App) -> None:
    for file_id in ("CR6EQWQVSKMMZCPWMPCX2D8YG8", "../../etc/passwd"):
        response = await app.client.post(
            "/tasks", json={"name": "process_csv", "params": {"file_id": file_id}}
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["body", "params", "file_id"]
    assert (await app.client.get("/tasks")).json()["items"] == []


# -- process_csv -----------------------------------------------------------------------------


async def run_csv(app: App, content: bytes) -> dict[str, Any]:
    record = await upload(app, content)
    task = await app.post_task("process_csv", params={"file_id": record["id"]})
    return await app.wait_for(task["id"], timeout=60)


async def test_csv_statistics(app: App) -> None:
    content = (
        b"name,amount,when\n"
        b'alice,10,"2020-01-01"\n'
        b'"bob, jr.",-2.5,\n'
        b'"multi\nline",,"x"\n'
        b"carol,7.5,y\n"
    )
    done = await run_csv(app, content)
    assert done["status"] == "completed"
    assert done["progress"] == 100.0
    assert done["result"] == {
        "rows": 4,
        "columns": {
            "name": {"count": 4},
            "amount": {"count": 3, "min": -2.5, "max": 10.0, "mean": 5.0},
            "when": {"count": 3},
        },
        "ragged_rows": 0,
    }


async def test_csv_with_only_a_header(app: App) -> None:
    done = await run_csv(app, b"a,b,c\n")
    assert done["result"] == {
        "rows": 0,
        "columns": {"a": {"count": 0}, "b": {"count": 0}, "c": {"count": 0}},
        "ragged_rows": 0,
    }


async def test_empty_csv(app: App) -> None:
    done = await run_csv(app, b"")
    assert done["result"] == {"rows": 0, "columns": {}, "ragged_rows": 0}


async def test_ragged_rows_bom_and_repeated_names(app: App) -> None:
    content = "\ufeffx,x,,y\n1,2,3\n4,5,6,7,8\n9\n".encode()
    done = await run_csv(app, content)
    assert done["status"] == "completed"
    result = done["result"]
    assert result["rows"] == 3 and result["ragged_rows"] == 3
    assert result["columns"] == {
        "x": {"count": 3, "min": 1.0, "max": 9.0, "mean": 14 / 3},
        "x_2": {"count": 2, "min": 2.0, "max": 5.0, "mean": 3.5},
        "column_3": {"count": 2, "min": 3.0, "max": 6.0, "mean": 4.5},
        "y": {"count": 1, "min": 7.0, "max": 7.0, "mean": 7.0},
    }


async def test_non_utf8_bytes_fail_with_a_clear_error(app: App) -> None:
    done = await run_csv(app, "name\ncaf\u00e9\n".encode("latin-1"))
    assert done["status"] == "failed"
    assert "not UTF-8" in done["error"] and "0xe9" in done["error"]
    assert done["attempts"] == 1


@dataclass
class BigCsv:
    content: bytes
    rows: int
    amounts: list[float]


@pytest.fixture(scope="module")
def big_csv() -> BigCsv:
    """About 50 MB of CSV, with the numbers to check the result against."""
    rng = random.Random(7)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "amount", "note"])
    amounts: list[float] = []
    rows = 0
    while out.tell() < 50_000_000:
        amount = round(rng.uniform(-1000, 1000), 2)
        amounts.append(amount)
        writer.writerow([rows, amount, "note, with comma" if rows % 7 else ""])
        rows += 1
    return BigCsv(out.getvalue().encode(), rows, amounts)


async def test_a_50_mb_csv_shows_progress_and_gets_the_numbers_right(
    app: App, big_csv: BigCsv
) -> None:
    record = await upload(app, big_csv.content, "big.csv")
    assert record["size"] >= 50_000_000
    task = await app.post_task("process_csv", params={"file_id": record["id"]})
    seen: set[float] = set()
    while (current := await app.task(task["id"]))["status"] not in ("completed", "failed"):
        if current["progress"] is not None:
            seen.add(current["progress"])
        await asyncio.sleep(0.05)
    assert current["status"] == "completed", current["error"]
    assert any(0 < p < 100 for p in seen)  # seen mid-run, by bytes read
    result = current["result"]
    assert result["rows"] == big_csv.rows
    amount = result["columns"]["amount"]
    assert amount["count"] == big_csv.rows
    assert amount["min"] == min(big_csv.amounts)
    assert amount["max"] == max(big_csv.amounts)
    assert amount["mean"] == pytest.approx(sum(big_csv.amounts) / big_csv.rows)
    assert result["columns"]["id"]["max"] == big_csv.rows - 1
    assert result["columns"]["note"] == {"count": big_csv.rows - (big_csv.rows + 6) // 7}


async def test_cancel_stops_csv_processing_mid_run(app: App, big_csv: BigCsv) -> None:
    record = await upload(app, big_csv.content, "big.csv")
    task = await app.post_task("process_csv", params={"file_id": record["id"]})
    await app.wait_for(task["id"], "running")
    response = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    done = await app.wait_for(task["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert (done["progress"] or 0) < 100  # stopped part-way (maybe before its first report)


# -- cleanup_files ---------------------------------------------------------------------------


async def test_cleanup_never_deletes_a_file_a_live_task_uses(
    make_app: AppFactory, settings: Settings
) -> None:
    app = await make_app(concurrency=1)
    used = await upload(app, b"a\n1\n", "used.csv")
    waiting = await upload(app, b"a\n2\n", "waiting.csv")
    spare = await upload(app, b"a\n3\n", "spare.csv")
    blocker = await app.post_task("hang")  # holds the only slot
    await app.wait_for(blocker["id"], "running")
    pending = await app.post_task("process_csv", params={"file_id": waiting["id"]})
    await asyncio.sleep(0.05)
    cleanup = await app.post_task("cleanup_files", params={"older_than": 0}, priority=10)
    await app.client.post(f"/tasks/{blocker['id']}/cancel")
    done = await app.wait_for(cleanup["id"])
    assert done["status"] == "completed"
    assert sorted(done["result"]["deleted"]) == sorted([used["id"], spare["id"]])
    assert done["result"]["kept_in_use"] == [waiting["id"]]
    assert stored_files(settings) == [settings.data_dir / waiting["id"]]
    assert (await app.client.get(f"/files/{spare['id']}")).status_code == 404
    assert (await app.wait_for(pending["id"]))["status"] == "completed"


async def test_cleanup_keeps_recent_files(app: App, settings: Settings) -> None:
    record = await upload(app, b"a\n1\n")
    cleanup = await app.post_task("cleanup_files", params={"older_than": 3600})
    done = await app.wait_for(cleanup["id"])
    assert done["result"] == {"deleted": [], "kept_in_use": []}
    assert stored_files(settings) == [settings.data_dir / record["id"]]


async def test_cleanup_needs_older_than(app: App) -> None:
    response = await app.client.post("/tasks", json={"name": "cleanup_files"})
    assert response.status_code == 422


# -- tasks from any route --------------------------------------------------------------------


async def test_add_task_from_a_route_returns_a_tracked_task(settings: Settings) -> None:
    application = create_app(settings)

    @application.post("/greet", status_code=201)
    async def greet(name: str, add_task: AddTask) -> dict[str, str]:
        task_id = await add_task(sample_tasks.echo, text=f"hello {name}")
        return {"task": task_id}

    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post("/greet", params={"name": "ada"})
            assert response.status_code == 201
            app = App(client, application.state.service)
            done = await app.wait_for(response.json()["task"])
            assert done["status"] == "completed"
            assert done["result"] == {"text": "hello ada", "extra": None}
