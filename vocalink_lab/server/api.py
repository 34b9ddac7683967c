"""REST handlers for the server, its devices and commands. Thin: parse, delegate, write.

Takes have their own module (`takes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

from ..errors import InvalidParameter
from ..hub import Hub
from ..protocol import ID_PATTERN, CommandParams
from ..protocol.codec import explain_validation_error
from .auth import Access
from .base import JsonHandler, check_id

if TYPE_CHECKING:
    from .app import Server

__all__ = [
    "ApproveHandler",
    "ClientHandler",
    "ClientsHandler",
    "CommandHandler",
    "CommandsHandler",
    "PairingHandler",
    "PingHandler",
    "RejectHandler",
    "ServerHandler",
]


class PingHandler(JsonHandler):
    """``GET /ping``: liveness; the one route open to all."""

    access = Access.PUBLIC

    def get(self) -> None:
        self.write_json({"status": "server alive"})


class ServerHandler(JsonHandler):
    """``GET /api/server``: who and where this server is; ``PUT`` renames it."""

    def initialize(self, server: Server) -> None:
        self.server = server

    async def get(self) -> None:
        self.write_json(await self.server.info())

    async def put(self) -> None:
        body = self.json_body()
        if "name" not in body:
            raise InvalidParameter("body must have a 'name'")
        await self.server.rename(body["name"])
        self.write_json(await self.server.info())


class ClientsHandler(JsonHandler):
    """``GET /api/clients``: every device that registered, connected or not."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self) -> None:
        devices = self.hub.devices()
        self.write_json({
            "items": devices,
            "total": len(devices),
            "connected": sum(1 for d in devices if d["connected"]),
        })


class ApproveHandler(JsonHandler):
    """``POST /api/clients/{id}/approve``: let a pending device in (it gets its key)."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def post(self, device_id: str) -> None:
        self.write_json(self.hub.approve(check_id(device_id, "device id")))


class RejectHandler(JsonHandler):
    """``POST /api/clients/{id}/reject``: refuse a device, or unpair it; it is forgotten."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def post(self, device_id: str) -> None:
        device_id = check_id(device_id, "device id")
        self.hub.reject(device_id)
        self.write_json({"ok": True, "device_id": device_id, "rejected": True})


class PairingHandler(JsonHandler):
    """``GET /api/pairing``: the join code and who waits; ``POST`` makes a new join code."""

    def initialize(self, server: Server) -> None:
        self.server = server

    def get(self) -> None:
        self.write_json(self.server.pairing_info())

    def post(self) -> None:
        self.write_json(self.server.pairing_info(new_code=True))


class ClientHandler(JsonHandler):
    """``GET /api/clients/{device_id}``: one device, with its history."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self, device_id: str) -> None:
        record = self.hub.registry.get(check_id(device_id, "device id"))
        self.write_json(record.to_dict(history=True))


class CommandRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Body of ``POST /api/commands``."""

    action: Annotated[str, msgspec.Meta(max_length=32)]
    targets: list[Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]] | None = None
    take_id: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)] | None = None
    params: CommandParams = CommandParams()
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=600)] | None = None
    lead_ms: Annotated[float, msgspec.Meta(ge=0, le=60_000)] | None = None
    wait: bool = True


class CommandsHandler(JsonHandler):
    """``POST /api/commands``: send a command and report every target's outcome.

    With ``"wait": true`` (default) the response comes once every target has
    answered or timed out; with ``false`` it comes at once (202) and
    ``GET /api/commands/{id}`` reports progress. ``GET`` lists recent commands.
    """

    def initialize(self, hub: Hub, schedule_lead_s: float = 0.0) -> None:
        self.hub = hub
        self.schedule_lead_s = schedule_lead_s

    def get(self) -> None:
        limit = self.int_arg("limit", 50, lo=1, hi=1000)
        self.write_json({"items": [self.hub.describe(r.result())
                                   for r in self.hub.commands.recent(limit)]})

    async def post(self) -> None:
        try:
            request = msgspec.convert(self.json_body(), CommandRequest)
        except msgspec.ValidationError as exc:
            reason = explain_validation_error(str(exc))
            raise InvalidParameter(f"invalid command: {reason}") from None
        # START and STOP are scheduled (every device acts at one instant of the server's
        # clock) unless lead_ms is 0; the others act on arrival.
        lead_s = (request.lead_ms / 1000 if request.lead_ms is not None
                  else self.schedule_lead_s if request.action.upper() in ("START", "STOP")
                  else 0.0)
        start_at = None
        if lead_s:
            # Clocks never measured are measured side by side, for at most the lead (and
            # at most a second): a target still unmeasured then acts on arrival, its
            # outcome says so, and it holds up no other.
            await self.hub.measure_unmeasured(request.targets, wait_s=lead_s)
            start_at = self.hub.schedule(request.targets, min_lead_s=lead_s)
        record = self.hub.issue(
            request.action,
            targets=request.targets,
            take_id=request.take_id,
            params=request.params,
            start_at=start_at,
            timeout_s=request.timeout_s,
        )
        if not request.wait:
            self.write_json(self.hub.describe(record.result()), status=202)
            return
        self.write_json(self.hub.describe(await record.wait()))


class CommandHandler(JsonHandler):
    """``GET /api/commands/{command_id}``: one command's outcomes so far."""

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self, command_id: str) -> None:
        record = self.hub.commands.get(check_id(command_id, "command id"))
        self.write_json(self.hub.describe(record.result()))
