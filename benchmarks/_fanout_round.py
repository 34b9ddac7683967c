"""The broadcast round of the fan-out reference server (``_fanout_baseline.py``).

A round: take ``issued_at``, encode one COMMAND frame, send it to every
registered device, and take ``completed_at`` when the last matching ACK has been
processed. ``run_round`` returns the same fields as vocalink's ``POST
/api/commands`` that fanout.py reads, and every START ACK's ``started_at``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

WS_PATH = "/ws/control"


def welcome(heartbeat_s: float, server_id: str) -> str:
    """The WELCOME frame (the same fields as vocalink's)."""
    return json.dumps({
        "type": "WELCOME", "server_id": server_id, "server_name": server_id, "protocol": 1,
        "server_time": time.time(), "heartbeat_s": heartbeat_s,
        "upload_url": "/api/audio/upload",
    })


class Round:
    """One broadcast command waiting for its ACKs."""

    def __init__(self, targets: list[str]) -> None:
        self.command_id = f"cmd-{uuid.uuid4().hex[:12]}"
        self.pending = set(targets)
        self.outcomes: dict[str, str] = {}
        self.started_at: list[float] = []
        self.issued_at = 0.0
        self.completed_at: float | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def ack(self, device_id: str, message: dict[str, Any]) -> None:
        """Count an ACK frame received on ``device_id``'s connection."""
        if message.get("command_id") != self.command_id or device_id not in self.pending \
                or message.get("device_id") != device_id:
            return
        self.pending.discard(device_id)
        self.outcomes[device_id] = str(message.get("status"))
        if isinstance(message.get("started_at"), int | float):
            self.started_at.append(float(message["started_at"]))
        if not self.pending:
            self.completed_at = time.time()
            self.done.set_result(None)


class Rounds:
    """Runs one round at a time; ``send_all(frame)`` is the server's broadcast."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.current: Round | None = None

    def on_ack(self, device_id: str, message: dict[str, Any]) -> None:
        if self.current is not None:
            self.current.ack(device_id, message)

    async def run(self, action: str, targets: list[str],
                  send_all: Callable[[str], None]) -> dict[str, Any]:
        if self.current is not None:
            raise RuntimeError("a round is already running")
        self.current = current = Round(targets)
        try:
            current.issued_at = time.time()
            send_all(json.dumps({
                "type": "COMMAND", "command_id": current.command_id, "action": action,
                "take_id": f"take-{uuid.uuid4().hex[:8]}",
            }))
            await asyncio.wait_for(asyncio.shield(current.done), self.timeout_s)
        except TimeoutError:
            pass
        finally:
            self.current = None
        success = sum(1 for s in current.outcomes.values() if s == "SUCCESS")
        return {
            "command_id": current.command_id,
            "action": action,
            "issued_at": current.issued_at,
            "completed_at": current.completed_at,
            "complete": current.completed_at is not None,
            "ok": success == len(targets),
            "started_at": current.started_at,
            "targets": len(targets),
            "counts": {"SUCCESS": success, "FAILED": len(current.outcomes) - success,
                       "TIMEOUT": len(current.pending)},
        }
