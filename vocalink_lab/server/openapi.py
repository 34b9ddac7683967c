"""``GET /api/openapi.json``: the REST API as an OpenAPI 3.1 document, built in Python.

The document is data, written next to the handlers it describes; request bodies that
already exist as msgspec structs (`CommandRequest`, `TakeUpdate`, `EnhanceRequest`,
`MergeRequest`) get their JSON Schema from msgspec rather than a second copy.
``tests/server/test_openapi.py`` walks the application's routes and holds the document
to them both ways (every route and method documented, nothing documented that is not
served); ``tests/server/test_fuzz_api.py`` fuzzes a real server against it.

Every error response is the one shape (`Error`). The two WebSocket routes are
described as the ``GET`` of their handshake, answered ``101 Switching Protocols``.

The module stays whole past 600 lines: the operations and the shapes they answer with
are one document, read together; split, each half would be checked without the other.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from ..audio import MEDIA_TYPES
from ..hub import SKEW_FLAG_MS, Outcome, PairingState
from ..protocol import ID_PATTERN, ClientState, JobState, Topic
from ..protocol.android import SessionMetadata
from ..storage import KINDS, UPLOAD_ID_PATTERN
from ..version import __version__
from .api import CommandRequest
from .base import JsonHandler
from .ingest import UPLOAD_FIELDS
from .jobs import EnhanceRequest, MergeRequest
from .takes import TakeUpdate
from .transcripts import TranscribeRequest
from .tus import CHECKSUMS, EXTENSIONS, OFFSET_TYPE, TUS_VERSION

__all__ = ["OPENAPI_PATH", "OpenApiHandler", "openapi_document"]

OPENAPI_PATH = "/api/openapi.json"

_SCHEMAS = "#/components/schemas/"
#: A tus PATCH body of the examples, and its Upload-Checksum (sha1, base64).
_EXAMPLE_BYTES = "vocal"
_EXAMPLE_SHA1 = "Wik8L7sjhLx8MgiFUG4pVepyKIo="
#: Request bodies whose schema msgspec derives from the struct the handler validates with.
_STRUCTS: tuple[type[msgspec.Struct], ...] = (CommandRequest, TakeUpdate, EnhanceRequest,
                                               MergeRequest, SessionMetadata,
                                               TranscribeRequest)
_REASONS = {
    101: "Switching Protocols: the connection is now a WebSocket",
    200: "OK", 201: "Created", 202: "Accepted: the work runs in the background",
    204: "No Content", 206: "Partial Content (a Range request)", 304: "Not Modified",
    400: "Malformed request (not JSON, bad header, broken multipart, invalid UTF-8...)",
    401: "No credential: send the controller token (Authorization: Bearer)",
    403: "A wrong token, or not allowed (another device's upload; the cookie alone on a "
         "change from another page)",
    404: "Unknown resource", 408: "The client stopped sending the body it announced",
    409: "Conflicts with what is stored", 410: "The upload expired",
    412: "Tus-Resumable: 1.0.0 is missing", 413: "Too large",
    415: "Wrong content type, or a file that is not audio",
    416: "The range lies outside the file", 422: "Invalid parameters",
    426: "Not a WebSocket handshake of version 13",
    460: "The body's checksum does not match Upload-Checksum",
    503: "mDNS could not register the new name; nothing changed",
}
#: What every request carrying a JSON body may be refused with.
_JSON_BODY_ERRORS = (400, 413, 415, 422)


#: How a client proves who it is (`server.auth`).
SECURITY_SCHEMES: dict[str, Any] = {
    "controllerToken": {
        "type": "http", "scheme": "bearer",
        "description": ("The controller token: printed by `vocalink serve` and `vocalink "
                        "dashboard`, kept in the data dir's `token` file (mode 0600), or "
                        "set in VOCALINK_TOKEN.")},
    "tokenInUrl": {
        "type": "apiKey", "in": "query", "name": "token",
        "description": ("The controller token once in a browser's URL; a GET answers with "
                        "an HttpOnly, SameSite=Strict cookie `vocalink-token-<port>`, which "
                        "then stands for it (a change made with the cookie alone must come "
                        "from this server's own page).")},
    "deviceKey": {
        "type": "http", "scheme": "bearer",
        "description": "A device's key, given when it was paired: uploads in its own name."},
}
#: Paths open to all (the devices' socket judges its REGISTER instead; the recorder page is
#: what a phone with only a join code opens).
_PUBLIC_PATHS = frozenset({"/ping", "/ws/control", "/recorder", "/recorder/static/{file}",
                           "/recorder/ca", "/recorder/ca.crt", "/sessions",
                           "/recordings/{rid}"})
#: Paths a device may use with its key.
_DEVICE_PATHS = ("/api/audio/upload", "/api/audio/uploads")


def openapi_document(*, security_schemes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API.

    Parameters
    ----------
    security_schemes : mapping, optional
        ``components.securitySchemes`` to declare (`SECURITY_SCHEMES` by default); every
        operation but ``/ping`` and ``/ws/control`` requires the controller token (uploads
        take a device key too) and lists 401 and 403; `_PUBLIC_PATHS` are open.

    Returns
    -------
    dict
        A new, JSON-ready document (the caller may change it).
    """
    schemes = dict(SECURITY_SCHEMES if security_schemes is None else security_schemes)
    components: dict[str, Any] = {"schemas": _component_schemas(),
                                  "securitySchemes": schemes}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vocalink",
            "version": __version__,
            "summary": "One synchronized multi-track recorder from the devices in a room.",
            "description": (
                "Every error, on every route, has one shape (`Error`); clients branch on "
                "its `code`, never on the message. Besides the answers listed per "
                "operation, any request may be refused before it reaches its route, in "
                "the same shape: 503 `too_busy` when the server is at its connection "
                "limits (in all, or from one address), 408 `request_timeout` when a "
                "request's line and headers are slow to arrive, 400 `bad_request` or 413 "
                "`too_large` when its body cannot be read (a Content-Length that is no "
                "integer, a Transfer-Encoding but chunked, a body over the route's limit: "
                "the connection then closes), 403 `forbidden` when its "
                "`Host` does not name this server (DNS rebinding) or, for the two "
                "WebSockets, when a page of another origin opens them. Every route but "
                "`/ping`, `/ws/control` and the recorder page asks for the controller "
                "token (uploads take a "
                "device key too): 401 `unauthorized` without one, 403 `forbidden` for a "
                "wrong one; devices are let in by their REGISTER (a device key, the "
                "controller token or a join code; else they wait for approval). A 500 (code "
                "`storage_error` or `internal_error`) is a fault of the server, never of "
                "the request, and is listed nowhere."),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [{"name": name, "description": text} for name, text in _TAGS],
        "security": [{"controllerToken": []}, {"tokenInUrl": []}],
        "paths": _framed(_secured(_paths())),
        "components": components,
    }


def _secured(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation's ``security``, and its 401 and 403, by what its route asks for."""
    for path, operations in paths.items():
        for operation in operations.values():
            if path in _PUBLIC_PATHS:
                operation["security"] = []
                continue
            if path.startswith(_DEVICE_PATHS):
                operation["security"] = [{"controllerToken": []}, {"deviceKey": []}]
            responses = operation["responses"]
            responses.update(_errors(401, 403))
            operation["responses"] = dict(sorted(responses.items()))
    return paths


def _framed(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation's 400 and 413 for a request Tornado could not read the body of.

    A Content-Length that is not one integer, a Transfer-Encoding other than chunked, or a
    body over the route's limit is refused before any route runs (`app._check_framing`).
    """
    for operations in paths.values():
        for operation in operations.values():
            responses = operation["responses"]
            for status, answer in _errors(400, 413):
                responses.setdefault(status, answer)
            operation["responses"] = dict(sorted(responses.items()))
    return paths


class OpenApiHandler(JsonHandler):
    """``GET /api/openapi.json``: this API, as an OpenAPI 3.1 document."""

    def get(self) -> None:
        self.write_json(_document())


@functools.cache
def _document() -> dict[str, Any]:
    """The document, built once per process (`write_json` only reads it)."""
    return openapi_document()


_TAGS = (
    ("server", "The server itself: identity, discovery, live rename."),
    ("devices", "Devices that registered over /ws/control."),
    ("commands", "Commands to devices (START, STOP...), tracked per target."),
    ("takes", "Takes: what one START opened and STOP closed."),
    ("recordings", "The catalog of recordings and their files."),
    ("uploads", "One-shot multipart upload, and resumable uploads (tus 1.0)."),
    ("jobs", "Enhance and merge jobs, run in the DSP pool."),
    ("transcripts", "Speech to text, of a recording or of a take by device."),
    ("websockets", "The two WebSocket routes, by their handshake."),
    ("meta", "Liveness and this document."),
    ("recorder", "The browser recorder page and its files (public)."),
)


# -- building blocks ---------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _nullable(type_: str, **more: Any) -> dict[str, Any]:
    return {"type": [type_, "null"], **more}


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _answer(status: int, schema: Mapping[str, Any] | None = None, *, description: str = "",
            headers: Mapping[str, Any] | None = None,
            content: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    response: dict[str, Any] = {"description": description or _REASONS[status]}
    if schema is not None:
        response["content"] = _json(schema)
    elif content is not None:
        response["content"] = dict(content)
    if headers:
        response["headers"] = dict(headers)
    return str(status), response


def _errors(*statuses: int, headers: Mapping[int, Mapping[str, Any]] | None = None
            ) -> list[tuple[str, dict[str, Any]]]:
    """Error responses, every one of them the `Error` shape."""
    return [_answer(s, _ref("Error"), headers=(headers or {}).get(s)) for s in sorted(statuses)]


def _header(description: str, schema: Mapping[str, Any] | None = None, *,
            required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required,
            "schema": dict(schema or {"type": "string"})}


def _busy(headers: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """503 ``too_busy``: at a limit the server keeps to protect its memory."""
    return _answer(503, _ref("Error"), description=(
        "At a limit the server keeps (code too_busy): nothing started; try again after "
        "Retry-After seconds"), headers={**(headers or {}), "Retry-After": _header(
            "Seconds to wait.", {"type": "integer", "minimum": 0}, required=True)})


def _param(name: str, where: str, description: str, schema: Mapping[str, Any], *,
           required: bool = False, example: Any = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "description": description,
                             "required": required or where == "path", "schema": dict(schema)}
    if example is not None:
        param["example"] = example
    return param


def _id_path(name: str, what: str, example: str) -> dict[str, Any]:
    return _param(name, "path", f"The {what}'s id.", {"type": "string", "minLength": 1},
                  example=example)


def _limit(default: int) -> dict[str, Any]:
    return _param("limit", "query", "Page size.",
                  {"type": "integer", "minimum": 1, "maximum": 1000, "default": default})


_OFFSET = _param("offset", "query", "Items to skip.",
                 {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0})


def _op(op_id: str, tag: str, summary: str, responses: Iterable[tuple[str, dict[str, Any]]],
        *, description: str = "", params: Iterable[Mapping[str, Any]] = (),
        body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": op_id, "tags": [tag], "summary": summary}
    if description:
        operation["description"] = description
    if params:
        operation["parameters"] = [dict(p) for p in params]
    if body is not None:
        operation["requestBody"] = dict(body)
    operation["responses"] = dict(sorted(responses))
    return operation


def _json_body(name: str, example: Mapping[str, Any]) -> dict[str, Any]:
    content = _json(_ref(name))
    content["application/json"]["example"] = dict(example)
    return {"required": True, "content": content}


# -- the tus headers ---------------------------------------------------------------------------

_TUS_RESUMABLE = _param("Tus-Resumable", "header", "The tus version; only 1.0.0 is spoken.",
                        {"type": "string", "const": TUS_VERSION}, required=True,
                        example=TUS_VERSION)
_RESUMABLE_OUT = {"Tus-Resumable": _header("Always 1.0.0.", {"const": TUS_VERSION},
                                           required=True)}
_OFFSET_OUT = {"Upload-Offset": _header("Bytes received so far.",
                                        {"type": "integer", "minimum": 0}, required=True)}
_EXPIRES_OUT = {"Upload-Expires": _header(
    "When an upload left without data is removed (RFC 9110 date); absent once complete.")}
_COMPLETE_OUT = {
    "Vocalink-Recording-Id": _header("Once complete: the recording the upload became."),
    "Vocalink-Sha256": _header("Once complete: the SHA-256 of the stored bytes, so that a "
                               "device knows the server holds exactly its bytes."),
}
_TUS_CAPABILITIES = {
    "Tus-Version": _header("Supported versions.", required=True),
    "Tus-Extension": _header(f"Supported extensions: {EXTENSIONS}.", required=True),
    "Tus-Max-Size": _header("The largest Upload-Length accepted, in bytes.",
                            {"type": "integer"}, required=True),
    "Tus-Checksum-Algorithm": _header(f"Algorithms for Upload-Checksum: "
                                      f"{', '.join(CHECKSUMS)}.", required=True),
}


#: A 404 of an upload id that is not one (not 32 hex digits) comes from the router, which
#: knows no tus: without Tus-Resumable.
_ROUTED_404 = {"Tus-Resumable": _header("1.0.0, unless the id is not an upload id at all.",
                                        {"const": TUS_VERSION})}


def _tus_errors(*statuses: int) -> list[tuple[str, dict[str, Any]]]:
    return _errors(*statuses, headers={s: _ROUTED_404 if s == 404 else _RESUMABLE_OUT
                                       for s in statuses})


def _tus_options(op_id: str, *params: Mapping[str, Any]) -> dict[str, Any]:
    refusals = _tus_errors(404) if params else []
    return _op(op_id, "uploads", "tus: what the server supports",
               [_answer(204, headers={**_RESUMABLE_OUT, **_TUS_CAPABILITIES}), *refusals],
               params=params)


# -- the paths ---------------------------------------------------------------------------------


_recorder_file = _param("file", "path", "A file of the page.", {"type": "string"},
                        example="recorder.js")


def _paths() -> dict[str, Any]:
    device_id = _id_path("device_id", "device", "mic-1")
    command_id = _id_path("command_id", "command", "cmd-1")
    take_id = _id_path("take_id", "take", "take-1")
    recording_id = _id_path("recording_id", "recording", "rec-1")
    job_id = _id_path("job_id", "job", "job-1")
    upload_id = _param("upload_id", "path", "The upload's id (from its Location).",
                       {"type": "string", "pattern": f"^{UPLOAD_ID_PATTERN}$"},
                       example="0" * 32)
    transcribe_note = (
        "422 `transcription_unavailable` when this server has no engine or model (install "
        "`vocalink-lab[asr]`, or set VOCALINK_ASR_MODEL): nothing is ever downloaded. A "
        "language whisper does not know is a 422 too; 503 when too many jobs are queued or "
        "running. The job's result is the transcript's summary and the start of its text.")
    transcript_format = _param(
        "format", "query", "json (the default), vtt (WebVTT, the device as each cue's "
        "voice), srt (SubRip) or csv (start, end, device, device_id, recording_id, text, "
        "confidence).", {"enum": ["json", "vtt", "srt", "csv"]}, example="vtt")
    transcript_answer = _answer(200, content={
        "application/json": {"schema": _ref("Transcript")},
        **{media: {"schema": {"type": "string"}} for media in (
            "text/vtt", "application/x-subrip", "text/csv")}})
    file_types = {media: {"schema": {"type": "string", "format": "binary"}}
                  for media in sorted({*MEDIA_TYPES.values(), "application/octet-stream"})}
    file_headers = {
        "ETag": _header("The file's SHA-256, quoted.", required=True),
        "Accept-Ranges": _header("Always bytes.", {"const": "bytes"}, required=True),
        "Content-Disposition": _header("attachment, with the file name."),
    }
    ranged = {"Content-Range": _header("bytes first-last/size.", required=True)}
    file_params = [
        recording_id,
        _param("Range", "header", "One byte range (bytes=first-last, bytes=first-, "
               "bytes=-suffix); anything else is ignored and the whole file sent.",
               {"type": "string"}, example="bytes=0-99"),
        _param("If-None-Match", "header", "The ETag already held: answered 304.",
               {"type": "string"}),
    ]
    range_error = {416: {"Content-Range": _header("bytes */size.")}}
    handshake = [
        _param("Upgrade", "header", "websocket", {"type": "string"}, required=True,
               example="websocket"),
        _param("Connection", "header", "Must list Upgrade.", {"type": "string"},
               required=True, example="Upgrade"),
        _param("Sec-WebSocket-Key", "header", "16 random bytes in base64 (RFC 6455).",
               {"type": "string"}, required=True, example="dGhlIHNhbXBsZSBub25jZQ=="),
        _param("Sec-WebSocket-Version", "header", "Only 13 is spoken.", {"type": "string"},
               required=True, example="13"),
    ]
    topics = sorted(t.value for t in Topic if t.family != "lab")
    job_created = [_answer(202, _ref("Job"), headers={"Location": _header(
        "/api/jobs/{id}: where to follow the job.", required=True)})]
    return {
        "/ping": {"get": _op("ping", "meta", "Liveness", [_answer(200, _ref("Ping"))])},
        "/recorder": {"get": _op(
            "recorderPage", "recorder", "The browser recorder: any phone becomes a device",
            [_answer(200, content={"text/html": {"schema": {"type": "string"}}})],
            description=("Public: a phone arrives with a join code in the URL "
                         "(`/recorder?join=K7QM-2XDF`); its REGISTER and its device key "
                         "are what is judged. Content-Security-Policy: its own scripts "
                         "and sockets only; Referrer-Policy: no-referrer.")),
            "head": _op("recorderPageHead", "recorder", "The page's headers only",
                        [_answer(200)])},
        "/recorder/static/{file}": {"get": _op(
            "recorderFile", "recorder", "One of the recorder page's files",
            [_answer(200, content={kind: {"schema": {"type": "string"}} for kind in (
                "text/javascript", "text/css", "text/html")}),
             *_errors(403, 404)],
            params=[_recorder_file]),
            "head": _op("recorderFileHead", "recorder", "A file's headers only",
                        [_answer(200), *_errors(403, 404)], params=[_recorder_file])},
        "/recorder/ca": {"get": _op(
            "trustPage", "recorder", "How a phone trusts this server's CA, once",
            [_answer(200, content={"text/html": {"schema": {"type": "string"}}})],
            description=("Public, and on plain HTTP too: a phone reads it before it trusts "
                         "anything. The CA's pin and SHA-256 (to compare with the "
                         "dashboard's), the steps on Android and iOS, a link to the CA.")),
        },
        "/recorder/ca.crt": {"get": _op(
            "caCertificate", "recorder", "The server's CA certificate (PEM), to install",
            [_answer(200, content={"application/x-x509-ca-cert": {
                "schema": {"type": "string"}}}), *_errors(404)],
            description="404 when the server serves no HTTPS.")},
        "/sessions": {"post": _op(
            "appSession", "android", "The VocalLink Android app asks for a session",
            [_answer(200, _ref("SessionMetadata")), *_errors(*_JSON_BODY_ERRORS)],
            description=(
                "Public: the app sends no credential. Its `id` is empty; the answer carries "
                "the id it activates on `/ws/control` (`session_activate`). The session is "
                "a device waiting for an operator's approval, or let in at once with "
                "`VOCALINK_ANDROID=trust`."),
            body=_json_body("SessionMetadata", {"id": "", "name": "User 7a1f", "ip": "127.0.0.23",
                                           "battery": 80, "device": "Google Pixel 7"}))},
        "/recordings/{rid}": {"post": _op(
            "appRecording", "android", "The app uploads a file it staged (multipart `file`)",
            [_answer(201, _ref("Upload"), description="Stored and catalogued"),
             _answer(200, _ref("Upload"), description="The same bytes were stored before"),
             *_errors(400, 404, 408, 409, 413, 415, 422)],
            description=(
                "Public: only a `rid` the server named in `rec_staged` is taken (404 "
                "otherwise). The file is catalogued with its session's device, take and "
                "start, moved back by the AAC priming its decoded audio carries."),
            params=[_param("rid", "path", "The staged recording's id (from rec_staged).",
                           {"type": "string", "minLength": 1}, example="rec-3f9a2c7d1e0b4a58")],
            body={"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string",
                                                   "contentMediaType": "audio/*"}}},
                "encoding": {"file": {"contentType": "audio/*"}}}}})},
        OPENAPI_PATH: {"get": _op(
            "openapi", "meta", "This document (OpenAPI 3.1)",
            [_answer(200, {"type": "object", "required": ["openapi", "paths"]})])},
        "/api/server": {
            "get": _op("getServer", "server", "Who and where this server is",
                       [_answer(200, _ref("ServerInfo"))]),
            "put": _op(
                "renameServer", "server", "Rename the server live",
                [_answer(200, _ref("ServerInfo")), *_errors(*_JSON_BODY_ERRORS, 503)],
                description=(
                    "mDNS re-registers first (a name taken on the network gets a suffix; "
                    "the answer has the name in use), devices get a SERVER message, and "
                    "the requested name is stored. 1 to 63 UTF-8 bytes, no control "
                    "characters, no '.', not only spaces; else 422."),
                body=_json_body("ServerRename", {"name": "Studio B"})),
        },
        "/api/clients": {"get": _op("listDevices", "devices",
                                    "Every device that registered, connected or not",
                                    [_answer(200, _ref("DeviceList"))])},
        "/api/clients/{device_id}": {"get": _op(
            "getDevice", "devices", "One device, with its history",
            [_answer(200, _ref("DeviceDetail")), *_errors(400, 404, 422)],
            params=[device_id])},
        "/api/clients/{device_id}/approve": {"post": _op(
            "approveDevice", "devices", "Let a pending device in",
            [_answer(200, _ref("Device")), *_errors(400, 404, 422)], params=[device_id],
            description=("The device gets a device key (in a second WELCOME) and, from "
                         "now on, commands. A device already let in is returned as it is."))},
        "/api/clients/{device_id}/reject": {"post": _op(
            "rejectDevice", "devices", "Refuse a device, or unpair it",
            [_answer(200, _object({"ok": {"const": True}, "device_id": {"type": "string"},
                                   "rejected": {"const": True}})),
             *_errors(400, 404, 422)], params=[device_id],
            description=("Its key is forgotten, its connection closed (4004) and it is "
                         "refused until it joins again with a join code."))},
        "/api/pairing": {
            "get": _op("getPairing", "devices", "The join code and the devices waiting",
                       [_answer(200, _ref("Pairing"))]),
            "post": _op("newJoinCode", "devices", "Replace the join code",
                        [_answer(200, _ref("Pairing"))],
                        description="The old code stops working at once."),
        },
        "/api/commands": {
            "get": _op("listCommands", "commands", "Recent commands",
                       [_answer(200, _ref("CommandList")), *_errors(400, 422)],
                       params=[_limit(50)]),
            "post": _op(
                "sendCommand", "commands", "Send a command and report every target's outcome",
                [_answer(200, _ref("Command"), description="Every target answered or "
                         "timed out"),
                 _answer(202, _ref("Command"), description='With "wait": false: sent; '
                         "poll GET /api/commands/{command_id}"),
                 *_errors(*_JSON_BODY_ERRORS, 404, 409)],
                description=(
                    "`action` is one of START, STOP, PAUSE, RESUME, PING, SYNC_NOW, "
                    "CANCEL (case-insensitive; another is a 422; CANCEL, stop and discard, "
                    "is the Android app's: other targets fail). START and STOP are scheduled: "
                    "every device acts at one instant of the server's clock (`lead_ms` "
                    "ahead; 0 acts on arrival). 404 names a target that never "
                    "registered; 409 is a broadcast while no device is connected."),
                body=_json_body("CommandRequest", {
                    "action": "START", "targets": ["mic-1"], "take_id": "take-1"})),
        },
        "/api/commands/{command_id}": {"get": _op(
            "getCommand", "commands", "One command's outcomes so far",
            [_answer(200, _ref("Command")), *_errors(400, 404, 422)], params=[command_id])},
        "/api/takes": {"get": _op(
            "listTakes", "takes",
            "Takes, newest first, with their recording counts and start skews",
            [_answer(200, _ref("TakeList")), *_errors(400, 422)],
            params=[_limit(50), _OFFSET])},
        "/api/takes/{take_id}": {
            "get": _op("getTake", "takes", "One take, its recordings and its start skew",
                       [_answer(200, _ref("TakeDetail")), *_errors(400, 404, 422)],
                       params=[take_id]),
            "put": _op("describeTake", "takes", "Set a take's name and notes",
                       [_answer(200, _ref("TakeDetail")), *_errors(*_JSON_BODY_ERRORS, 404)],
                       params=[take_id], body=_json_body("TakeUpdate", {
                           "name": "Warm-up", "notes": "two voices, one room"})),
            "delete": _op(
                "deleteTake", "takes", "Delete a stopped take with its recordings",
                [_answer(200, _ref("TakeDeleted")), *_errors(400, 404, 409, 422)],
                description=("Every recording of the take (originals and derived ones) goes, "
                             "rows then files, each announced as `recording.deleted`; then "
                             "the take. 409 while the take is still recording (not "
                             "stopped): nothing is deleted. Recordings derived from its "
                             "recordings that belong to no take keep their lineage."),
                params=[take_id]),
        },
        "/api/takes/{take_id}/archive": {"get": _op(
            "downloadTake", "takes", "The take's files and a manifest, as one ZIP",
            [_answer(200, headers={"Content-Disposition": _header(
                "attachment, with the archive's file name (`<take name or id>.zip`).",
                required=True)}, content={"application/zip": {
                    "schema": {"type": "string", "format": "binary"}}}),
             *_errors(400, 404, 422)],
            description=(
                "Streamed as it is written (chunked; no Content-Length): every original "
                "recording of the take and every merge of its recordings, stored "
                "uncompressed as `<take name or id>/<device>-<recording id>.<ext>`, and "
                "`<take name or id>/manifest.json` first: the take and, per member, "
                "`file`, `recording_id`, `kind`, `device_id`, `device_name`, `bytes` and "
                "`sha256` from the catalog. ZIP64 where a member needs it. 404 for an "
                "unknown take or a member whose file is missing (nothing is sent then); a "
                "member that cannot be read once the ZIP has begun closes the connection."),
            params=[take_id])},
        "/api/audio/upload": {"post": _op(
            "upload", "uploads", "Upload one file in one request (multipart)",
            [_answer(201, _ref("Upload"), description="Stored and catalogued"),
             _answer(200, _ref("Upload"), description="The same recording_id with the same "
                     "bytes was stored before: nothing changed"),
             *_errors(400, 408, 409, 413, 415, 422)],
            description=(
                "Streamed to disk, hashed on the way, checked against `sha256`, probed "
                "for what it really is, then moved into place and catalogued. 409: the "
                "recording_id is taken by other bytes; 415: not audio."),
            body={"required": True, "content": {"multipart/form-data": {
                "schema": _ref("UploadForm"),
                "encoding": {"file": {"contentType": "application/octet-stream"}}}}})},
        "/api/audio/uploads": {
            "options": _tus_options("tusCapabilities"),
            "post": _op(
                "tusCreate", "uploads", "tus: create a resumable upload",
                [_answer(201, _ref("TusUpload"), headers={
                    **_RESUMABLE_OUT, **_EXPIRES_OUT,
                    "Location": _header("The upload's URL.", required=True)}),
                 *_tus_errors(400, 412, 413, 422), _busy(_RESUMABLE_OUT)],
                description=("Then PATCH the bytes to its Location; 503 when as many "
                             "uploads as the server takes are in progress. Upload-Metadata "
                             f"keys: {', '.join(UPLOAD_FIELDS)}, filename."),
                params=[
                    _TUS_RESUMABLE,
                    _param("Upload-Length", "header", "The file's size in bytes.",
                           {"type": "integer", "minimum": 1}, required=True, example=1024),
                    _param("Upload-Metadata", "header",
                           "Comma-separated `key base64(value)` pairs.",
                           {"type": "string", "maxLength": 4096,
                            "pattern": r"^([!-+\--~]+ [A-Za-z0-9+/]*={0,2})?"
                                       r"(,[!-+\--~]+ [A-Za-z0-9+/]*={0,2})*$"},
                           example="recording_id cmVjLTE="),
                ]),
        },
        "/api/audio/uploads/{upload_id}": {
            "options": _tus_options("tusUploadCapabilities", upload_id),
            "head": _op(
                "tusOffset", "uploads", "tus: where the upload stands",
                [_answer(200, headers={
                    **_RESUMABLE_OUT, **_OFFSET_OUT, **_EXPIRES_OUT, **_COMPLETE_OUT,
                    "Upload-Length": _header("The upload's size.", {"type": "integer"},
                                             required=True),
                    "Upload-Metadata": _header("As sent at creation.")}),
                 *_tus_errors(404, 410, 412)],
                params=[upload_id, _TUS_RESUMABLE]),
            "patch": _op(
                "tusAppend", "uploads", "tus: send bytes from an offset",
                [_answer(204, headers={**_RESUMABLE_OUT, **_OFFSET_OUT, **_EXPIRES_OUT,
                                       **_COMPLETE_OUT}),
                 *_tus_errors(400, 404, 408, 409, 410, 412, 413, 415, 460)],
                description=(
                    "The last byte completes the upload: it becomes a recording, named by "
                    "Vocalink-Recording-Id. 409: Upload-Offset is not the upload's "
                    "offset (the answer's Upload-Offset is), or the upload was refused."),
                params=[
                    upload_id, _TUS_RESUMABLE,
                    _param("Upload-Offset", "header", "Where these bytes start.",
                           {"type": "integer", "minimum": 0}, required=True, example=0),
                    _param("Upload-Checksum", "header",
                           f"`algorithm base64(digest)` of this request's body; "
                           f"algorithms: {', '.join(CHECKSUMS)}.",
                           {"type": "string", "pattern": f"^({'|'.join(CHECKSUMS)}) "
                            "[A-Za-z0-9+/]*={0,2}$"}, example=f"sha1 {_EXAMPLE_SHA1}"),
                ],
                body={"required": True, "content": {OFFSET_TYPE: {
                    "schema": {"type": "string", "format": "binary"},
                    "example": _EXAMPLE_BYTES}}}),
            "delete": _op(
                "tusTerminate", "uploads", "tus: terminate an upload",
                [_answer(204, headers=_RESUMABLE_OUT), *_tus_errors(404, 410, 412)],
                description="For a completed upload, forgets the upload, not the recording.",
                params=[upload_id, _TUS_RESUMABLE]),
        },
        "/api/audio/list": {"get": _op(
            "listRecordings", "recordings", "Recordings, filtered and paginated",
            [_answer(200, _ref("RecordingPage")), *_errors(400, 422)],
            params=[
                _param("device_id", "query", "Only this device's.",
                       {"type": "string", "pattern": ID_PATTERN}),
                _param("take_id", "query", "Only this take's.",
                       {"type": "string", "pattern": ID_PATTERN}),
                _param("kind", "query", "Only this kind.", {"enum": list(KINDS)}),
                _limit(100), _OFFSET,
                _param("order", "query", "By creation time.",
                       {"enum": ["newest", "oldest"], "default": "newest"}),
            ])},
        "/api/audio/merge": {"post": _op(
            "merge", "jobs", "Merge recordings into a new one (a job)",
            [*job_created, *_errors(*_JSON_BODY_ERRORS, 404), _busy()],
            description=("`mode` is multichannel, mix or concat. 404 names every id not "
                         "in the catalog, 413 inputs that would decode to more audio than "
                         "the server holds at once, 503 too many jobs queued or running; "
                         "nothing is merged then."),
            body=_json_body("MergeRequest", {"ids": ["rec-1"], "mode": "mix"}))},
        "/api/audio/{recording_id}/meta": {"get": _op(
            "getRecording", "recordings", "A recording's catalog row",
            [_answer(200, _ref("Recording")), *_errors(400, 404, 422)],
            params=[recording_id])},
        "/api/audio/{recording_id}/enhance": {"post": _op(
            "enhance", "jobs", "Enhance a recording into a new one (a job)",
            [*job_created, *_errors(*_JSON_BODY_ERRORS, 404), _busy()],
            description=("A bad preset or parameter is a 422 before any work starts; 503 "
                         "when too many jobs are queued or running."),
            params=[recording_id],
            body=_json_body("EnhanceRequest", {"preset": "auto", "format": "wav"}))},
        "/api/audio/{recording_id}/transcribe": {"post": _op(
            "transcribe", "transcripts", "Transcribe a recording (a job)",
            [*job_created, *_errors(*_JSON_BODY_ERRORS, 404), _busy()],
            description=transcribe_note,
            params=[recording_id], body=_json_body("TranscribeRequest", {"language": "en"}))},
        "/api/audio/{recording_id}/transcript": {"get": _op(
            "getTranscript", "transcripts", "A recording's transcript: JSON, WebVTT, SRT or CSV",
            [transcript_answer, *_errors(400, 404, 422)],
            description=("404 `transcript_not_found` until the recording is transcribed. "
                         "Times are seconds from the recording's first sample."),
            params=[recording_id, transcript_format])},
        "/api/takes/{take_id}/transcribe": {"post": _op(
            "transcribeTake", "transcripts",
            "Transcribe a take: one transcript on its timeline, each line by device (a job)",
            [*job_created, *_errors(*_JSON_BODY_ERRORS, 404, 409), _busy()],
            description=(transcribe_note + " The take's originals are aligned, every "
                         "channel transcribed, and speech that several microphones heard "
                         "is given once, to the device that heard it loudest. 409 while "
                         "the take records or before any recording arrived."),
            params=[take_id], body=_json_body("TranscribeRequest", {"enhance": False}))},
        "/api/takes/{take_id}/transcript": {"get": _op(
            "getTakeTranscript", "transcripts",
            "A take's transcript, lines by device: JSON, WebVTT, SRT or CSV",
            [transcript_answer, *_errors(400, 404, 422)],
            description=("404 `transcript_not_found` until the take is transcribed. Times "
                         "are seconds from the take's start (`origin_at`, server time)."),
            params=[take_id, transcript_format])},
        "/api/jobs": {"get": _op("listJobs", "jobs", "The jobs kept in memory, newest first",
                                 [_answer(200, _ref("JobList"))])},
        "/api/jobs/{job_id}": {
            "get": _op("getJob", "jobs", "A job's state, progress and result",
                       [_answer(200, _ref("Job")), *_errors(400, 404, 422)], params=[job_id]),
            "delete": _op("cancelJob", "jobs", "Cancel a job (a finished one is unchanged)",
                          [_answer(200, _ref("Job")), *_errors(400, 404, 422)],
                          params=[job_id]),
        },
        "/api/audio/{recording_id}": {
            "get": _op(
                "download", "recordings", "The file, with HTTP Range",
                [_answer(200, headers=file_headers, content=file_types),
                 _answer(206, headers={**file_headers, **ranged}, content=file_types),
                 _answer(304, headers=file_headers),
                 *_errors(400, 404, 416, 422, headers=range_error)],
                params=file_params),
            "head": _op(
                "downloadHead", "recordings", "The file's headers",
                [_answer(200, headers=file_headers), _answer(206, headers=file_headers),
                 _answer(304, headers=file_headers),
                 *_errors(400, 404, 416, 422, headers=range_error)],
                params=file_params),
            "delete": _op(
                "deleteRecording", "recordings", "Remove the row, then the file",
                [_answer(200, _ref("Deleted")), *_errors(400, 404, 422)],
                description="Recordings derived from it keep their lineage.",
                params=[recording_id]),
        },
        "/ws/events": {"get": _op(
            "events", "websockets", "WebSocket: the hub's events, for controllers",
            [_answer(101, description=(
                "The stream: one JSON text frame per event, `{\"topic\", \"data\", "
                "\"at\"}`; what the client sends is ignored. A slow reader loses the "
                "oldest events, never the server's memory.")),
             *_errors(400, 422, 426)],
            description="What controllers (the Lab, the widgets) follow.",
            params=[*handshake, _param(
                "topics", "query", f"Comma-separated topics (all by default): "
                f"{', '.join(topics)}; another is a 422.", {"type": "string"},
                example="device.updated,job.updated")])},
        "/ws/control": {"get": _op(
            "control", "websockets", "WebSocket: the devices' control connection",
            [_answer(101, description=(
                "Protocol v1: the device sends REGISTER and gets WELCOME, then receives "
                "COMMANDs, answers with ACKs, reports STATUS and RECORDINGs, answers SYNC "
                "probes. Keep-alive by WebSocket pings.")),
             *_errors(400, 426)],
            params=handshake)},
    }


# -- the schemas -------------------------------------------------------------------------------


def _component_schemas() -> dict[str, Any]:
    _, derived = msgspec.json.schema_components(_STRUCTS, ref_template=_SCHEMAS + "{name}")
    number, text, integer = {"type": "number"}, {"type": "string"}, {"type": "integer"}
    strings = {"type": "array", "items": text}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "description": "The one error shape, on every route.",
            "required": ["ok", "error", "errors", "status", "code"],
            "additionalProperties": False,
            "properties": {
                "ok": {"const": False},
                "error": {"type": "string", "minLength": 1, "description": "What went wrong."},
                "errors": {**strings, "minItems": 1, "description": "Every problem."},
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                         "description": "Stable: names the error's class."},
            },
        },
        "Ping": _object({"status": {"const": "server alive"}}),
        "ServerRename": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 63}}},
        "ServerInfo": _object({
            "id": text, "name": text, "version": text, "protocol": integer,
            "host": text, "port": integer, "url": text, "ws_url": text, "ws_path": text,
            "events_path": text, "upload_path": text, "resumable_upload_path": text,
            "addresses": strings,
            "discovery": _object({"state": text, "name": _nullable("string"),
                                  "error": _nullable("string")}),
            "auth": _object({"required": {"type": "boolean"}}),
            "tls": _object({"enabled": {"type": "boolean"},
                            "ca_fingerprint": _nullable("string", description=(
                                "Base64 SHA-256 of the local CA's public key: pin it.")),
                            "https_url": _nullable("string")}),
            "pairing": _ref("Pairing"),
            "devices": _object({"known": integer, "connected": integer, "pending": integer}),
            "recordings": integer, "data_dir": text,
            "storage": _object({"clean": {"type": "boolean"},
                                "missing_files": {"type": "array"},
                                "orphan_files": strings, "partial_uploads": strings}),
            "limits": _object({"max_upload_bytes": integer, "max_frame_bytes": integer}),
        }),
        "Pairing": _object({
            "required": {"type": "boolean"},
            "join_code": _nullable("string", description="XXXX-XXXX; null when pairing is "
                                   "not required"),
            "join_code_expires_at": _nullable("number", description="Server time."),
            "join_code_expires_in_s": _nullable("number", description=(
                "Seconds left when answered: a controller's clock may differ.")),
            "pending": strings, "paired": integer}),
        "Device": _object({
            "device_id": text, "name": text, "platform": text,
            "state": {"enum": [s.value for s in ClientState]},
            "pairing": {"enum": [p.value for p in PairingState]},
            "connected": {"type": "boolean"}, "first_seen": number, "last_seen": number,
            "remote": text, "connections": integer,
            "level_dbfs": _nullable("number"), "peak_dbfs": _nullable("number"),
            "battery": _nullable("number"), "free_bytes": _nullable("integer"),
            "pending_uploads": integer, "recording_id": _nullable("string"),
            "elapsed_s": _nullable("number"), "clock_offset_s": _nullable("number"),
            "rtt_s": _nullable("number"),
            "clock": _nullable("object", description="The clock estimate: offset_s, "
                               "drift_ppm, rtt_s, uncertainty_s, samples, bursts."),
            "capabilities": _object({"sample_rates": {"type": "array", "items": integer},
                                     "channels": {"type": "array", "items": integer},
                                     "formats": strings}),
            "last_command": _nullable("object"),
            "announced_recordings": strings, "offline_recordings": strings,
            "recovered_recordings": strings,
        }),
        "DeviceDetail": {"allOf": [_ref("Device"), _object({"history": {
            "type": "array", "items": _object({"at": number, "kind": text, "detail": text})}})]},
        "DeviceList": _object({"items": {"type": "array", "items": _ref("Device")},
                               "total": integer, "connected": integer}),
        "Command": _object({
            "command_id": text, "action": text, "take_id": _nullable("string"),
            "broadcast": {"type": "boolean"}, "issued_at": number,
            "completed_at": _nullable("number"),
            "start_at": _nullable("number", description="The scheduled instant, server time."),
            "complete": {"type": "boolean"}, "ok": {"type": "boolean"},
            "counts": {"type": "object", "additionalProperties": integer},
            "outcomes": {"type": "object", "additionalProperties": _object({
                "device_id": text, "status": {"enum": [o.value for o in Outcome]},
                "error": _nullable("string"), "recording_id": _nullable("string"),
                "started_at": _nullable("number"), "latency_s": _nullable("number"),
            }, optional={"late_ms": _nullable("number"),
                         "uncertainty_ms": _nullable("number", description=(
                             "How far the device's clock estimate may be off at the "
                             "scheduled instant.")),
                         "note": _nullable("string", description=(
                             "Why the device was not scheduled (its clock is not "
                             "measured: it started on arrival), or that its clock was "
                             "not settled yet (it started, flagged)."))})},
        }),
        "CommandList": _object({"items": {"type": "array", "items": _ref("Command")}}),
        "Skew": _object({
            "skew_ms": _nullable("number", description="Latest minus earliest start."),
            "bound_ms": _nullable("number", description=(
                "The most the true skew may be, every start moved by its clock "
                "uncertainty the worst way; null when a clock was not measured.")),
            "flagged": {"type": "boolean", "description": (
                f"The bound is over {SKEW_FLAG_MS} ms, or unknown: align before "
                "sample-accurate use.")},
            "flag": _nullable("string"), "devices": integer,
            "start_offset_ms": {"type": "object", "additionalProperties": _nullable("number")},
            "uncertainty_ms": {"type": "object", "additionalProperties": _nullable("number")},
        }),
        "TranscriptSummary": _object({
            "kind": {"enum": ["recording", "take"]}, "subject_id": text, "language": text,
            "model": text, "enhanced": {"type": "boolean"}, "segments": integer,
            "duration_s": number, "created_at": number}),
        "Transcript": _object({
            "kind": {"enum": ["recording", "take"]}, "subject_id": _nullable("string"),
            "language": text, "language_probability": number, "duration_s": number,
            "origin_at": _nullable("number", description="Server time of time 0."),
            "model": text, "engine": text, "enhanced": {"type": "boolean"},
            "tracks": {"type": "array", "items": {"type": "object"}}, "text": text,
            "segments": {"type": "array", "items": _object({
                "start": number, "end": number, "text": text,
                "confidence": _nullable("number"),
                "words": {"type": "array", "items": _object({
                    "start": number, "end": number, "word": text,
                    "probability": _nullable("number")})}},
                optional={"device_id": _nullable("string"), "device_name": _nullable("string"),
                          "recording_id": _nullable("string"), "channel": integer,
                          "level_db": _nullable("number")})}}),
        "Take": _object({**_take_fields(recordings=integer), "skew": _ref("Skew")}),
        "TakeDetail": _object({
            **_take_fields(recordings={"type": "array", "items": _ref("Recording")}),
            "skew": _ref("Skew"),
        }),
        "TakeList": _object({"items": {"type": "array", "items": _ref("Take")},
                             "total": integer, "limit": integer, "offset": integer}),
        "Recording": _object({
            "id": text, "path": text, "format": text, "sample_rate": integer,
            "channels": integer, "frames": integer, "duration_s": number, "bytes": integer,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "created_at": number,
            "kind": {"enum": list(KINDS)}, "take_id": _nullable("string"),
            "device_id": _nullable("string"), "device_name": _nullable("string"),
            "parents": strings, "params": {"type": "object"}, "codec": _nullable("string"),
            "started_at": _nullable("number", description="First sample, server time."),
            "original_name": _nullable("string"),
        }),
        "RecordingPage": _object({
            "items": {"type": "array", "items": _ref("Recording")}, "total": integer,
            "limit": integer, "offset": integer, "next_offset": _nullable("integer"),
        }),
        "Deleted": _object({"deleted": text, "recording": _ref("Recording")}),
        "TakeDeleted": _object({
            "deleted": text,
            "take": _object(_take_fields(recordings=integer)),
            "recordings": {"type": "array", "items": text,
                           "description": "The ids of the recordings deleted with it."}}),
        "UploadForm": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary"},
                **{name: {"type": "string"} for name in UPLOAD_FIELDS},
            },
        },
        "Upload": _object({"file_id": text, "created": {"type": "boolean"},
                           "duplicate": {"type": "boolean"}, "recording": _ref("Recording")}),
        "TusUpload": _object({"id": text, "url": text, "offset": integer, "length": integer}),
        "Job": _object({
            "id": text, "kind": text, "state": {"enum": [s.value for s in JobState]},
            "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "params": {"type": "object"},
            "result": _nullable("object", description="The new recording and the DSP report."),
            "error": {"oneOf": [_ref("Error"), {"type": "null"}]},
            "created_at": number, "started_at": _nullable("number"),
            "finished_at": _nullable("number"), "elapsed_s": _nullable("number"),
        }),
        "JobList": _object({"items": {"type": "array", "items": _ref("Job")}}),
    }
    for name, schema in derived.items():
        assert name not in schemas, f"{name} is both derived and written"
        schemas[name] = schema
    return dict(sorted(schemas.items()))


def _take_fields(*, recordings: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": {"type": "string"}, "name": _nullable("string"), "notes": {"type": "string"},
        "started_at": {"type": "number"}, "stopped_at": _nullable("number"),
        "duration_s": _nullable("number"), "devices": {"type": "array",
                                                       "items": {"type": "string"}},
        "recordings": dict(recordings), "created_at": {"type": "number"},
        "transcript": {"oneOf": [{"type": "null"}, _ref("TranscriptSummary")]},
    }


def _object(properties: Mapping[str, Any], *,
            optional: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An object with these properties, all present; more may come in a later version."""
    return {"type": "object", "required": list(properties),
            "properties": {**properties, **(optional or {})}}
