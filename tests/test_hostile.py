"""Hostile clients: the service answers with a 4xx or keeps serving others; it never stalls."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from tests.harness import Server, ServerFactory

pytestmark = pytest.mark.slow


def healthy(server: Server) -> bool:
    return httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_huge_headers_get_431_and_the_server_goes_on(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    for size in (17_000, 200_000, 2_000_000):
        response = httpx.get(f"{server.url}/tasks", headers={"x-big": "a" * size}, timeout=30)
        assert response.status_code == 431
    many = {f"x-h{i}": "b" * 100 for i in range(300)}
    assert httpx.get(f"{server.url}/tasks", headers=many).status_code == 431
    assert healthy(server)


def test_a_slow_client_does_not_hold_up_others(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    stop = threading.Event()

    def dribble() -> None:
        """Send a request one byte at a time, never finishing it."""
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            request = b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"
            for byte in request:
                if stop.is_set():
                    return
                sock.send(bytes([byte]))
                time.sleep(0.02)
            while not stop.is_set():
                sock.send(b" ")
                time.sleep(0.05)

    slow = [threading.Thread(target=dribble, daemon=True) for _ in range(20)]
    for thread in slow:
        thread.start()
    try:
        time.sleep(0.5)
        for _ in range(20):  # others are served all along
            response = httpx.post(f"{server.url}/tasks", json={"name": "noop"}, timeout=10)
            assert response.status_code == 202
    finally:
        stop.set()
    for thread in slow:
        thread.join(10)
    assert healthy(server)


def test_a_thousand_concurrent_connections(server_factory: ServerFactory) -> None:
    server = server_factory().start()

    async def one(index: int) -> int:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            return 0  # refused at the door is fine; a stall is not
        body = json.dumps({"name": "echo", "params": {"text": str(index)}}).encode()
        writer.write(
            b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 60)
        writer.close()
        return int(status_line.split()[1]) if status_line else 0

    async def all_at_once() -> list[int]:
        return await asyncio.gather(*(one(i) for i in range(1000)))

    statuses = asyncio.run(all_at_once())
    assert set(statuses) <= {202, 0, 503}
    assert statuses.count(202) >= 900
    assert healthy(server)
    listed = httpx.get(f"{server.url}/tasks", params={"limit": 500, "name": "echo"}).json()
    assert len(listed["items"]) == 500


def test_deep_nesting_and_a_megabyte_string(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    for depth in (100, 1000, 100_000):
        body = '{"name":"echo","params":{"text":"x","extra":' + '{"a":' * depth + "1"
        body += "}" * depth + "}}"
        response = httpx.post(
            f"{server.url}/tasks", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422
        assert "nested" in response.json()["detail"][0]["msg"]
    text = "é" * 500_000  # 1 MB of UTF-8
    response = httpx.post(
        f"{server.url}/tasks", json={"name": "echo", "params": {"text": text}}, timeout=30
    )
    assert response.status_code == 202
    task_id = response.json()["id"]
    for _ in range(200):
        task = httpx.get(f"{server.url}/tasks/{task_id}", timeout=30).json()
        if task["status"] == "completed":
            break
        time.sleep(0.05)
    assert task["result"]["text"] == text
    too_big = httpx.post(
        f"{server.url}/tasks", json={"name": "echo", "params": {"text": "x" * 2_000_000}}
    )
    assert too_big.status_code == 413
    assert healthy(server)
