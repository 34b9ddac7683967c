"""The server: Tornado application, REST handlers, the devices' WebSocket, uploads."""

from __future__ import annotations

from .app import UPLOAD_PATH, WS_PATH, Server, make_app
from .connections import tune_collector

__all__ = ["UPLOAD_PATH", "WS_PATH", "Server", "make_app", "tune_collector"]
