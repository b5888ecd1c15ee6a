"""How the server and its worker processes talk: length-prefixed JSON frames over a socket.

JSON, never pickle: a worker runs arbitrary library code, and what it sends back is read as
data only. Each frame is a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024  # a result larger than this is refused rather than read


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise ValueError(f"a message of {len(body)} bytes is over the limit of {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a frame must hold a JSON object")
    return message
