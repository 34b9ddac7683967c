"""One error tree for the whole package.

Every error carries the HTTP status it maps to when it escapes a handler (and, for
protocol errors, the WebSocket close code) and a stable ``code``, so that the server
renders all of them into one JSON shape,
``{"ok": false, "error": str, "errors": [str], "status": int, "code": str}``, and a
client turns that shape back into the same class (`from_shape`): a notebook catches
`RecordingNotFound`, not a bare status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "AudioFormatError",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "DeviceNotFound",
    "DiscoveryError",
    "Forbidden",
    "CertificateMismatch",
    "ChecksumMismatch",
    "Gone",
    "InsufficientStorage",
    "PreconditionFailed",
    "InvalidParameter",
    "JobCancelled",
    "JobNotFound",
    "NotFound",
    "PairingRefused",
    "ParameterError",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "ProtocolError",
    "RecordingNotFound",
    "RequestTimeout",
    "StorageError",
    "TakeNotFound",
    "TranscriptNotFound",
    "TranscriptionUnavailable",
    "TooBusy",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpgradeRequired",
    "VocalinkError",
    "WaitTimeout",
    "error_class",
    "error_shape",
    "from_shape",
]

#: Each code names one class; filled in as the classes are defined (`__init_subclass__`).
_BY_CODE: dict[str, type[VocalinkError]] = {}
#: The generic code for a status that no error of ours raised (Tornado's 404 and 405...).
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 409: "conflict",
                 410: "gone", 411: "length_required", 412: "precondition_failed",
                 413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type",
                 416: "range_not_satisfiable", 422: "invalid_parameter",
                 426: "upgrade_required", 431: "headers_too_large", 460: "checksum_mismatch",
                 501: "not_implemented", 503: "unavailable", 507: "insufficient_storage"}


def error_shape(status: int, message: str, errors: Sequence[str] | None = None, *,
                code: str | None = None) -> dict[str, object]:
    """The one JSON error shape, for an error that is not a `VocalinkError` (Tornado's own).

    Parameters
    ----------
    status : int
        The HTTP status.
    message : str
        What went wrong.
    errors : sequence of str, optional
        Every problem (default: just ``message``).
    code : str, optional
        The stable code; by default the generic one for ``status``.

    Returns
    -------
    dict
        ``{"ok": false, "error", "errors", "status", "code"}``.
    """
    if code is None:
        code = _STATUS_CODES.get(status, "internal_error" if status >= 500 else "error")
    return {"ok": False, "error": message, "errors": list(errors) if errors else [message],
            "status": status, "code": code}


def error_class(code: str | None, status: int) -> type[VocalinkError]:
    """The class an error shape stands for: by its ``code``, else the generic one of its status."""
    if code in _BY_CODE:
        return _BY_CODE[code]
    generic = _BY_CODE.get(_STATUS_CODES.get(status, ""))
    return generic if generic is not None else VocalinkError


def from_shape(status: int, body: object) -> VocalinkError:
    """The exception an error response stands for (the one shape, or anything else).

    Parameters
    ----------
    status : int
        The response's HTTP status (it wins over the body's, should they differ).
    body : object
        The parsed JSON body; anything that is not the error shape gets a generic message.

    Returns
    -------
    VocalinkError
        Of the class named by the body's ``code`` (`RecordingNotFound`,
        `ParameterError`...), carrying the server's message, problems and status.
    """
    if isinstance(body, Mapping) and "error" in body:
        message = str(body["error"])
        problems = body.get("errors")
        problems = [str(p) for p in problems] if isinstance(problems, list) and problems else None
        code = body.get("code")
    else:
        message, problems, code = f"the server answered HTTP {status}", None, None
    cls = error_class(code if isinstance(code, str) else None, status)
    error = cls.__new__(cls)
    VocalinkError.__init__(error, message, errors=problems)
    error.status = status
    return error



class VocalinkError(Exception):
    """Base class for all vocalink_lab errors.

    Parameters
    ----------
    message : str
        What went wrong, in words a researcher can act on.
    errors : sequence of str, optional
        Individual problems when there are several (e.g. one per invalid field).
    headers : mapping of str to str, optional
        HTTP headers the error response must carry (e.g. ``Content-Range`` on a 416).
    """

    status: int = 500
    code: str = "internal_error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:  # a class that only inherits its code does not claim it
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str,
        *,
        errors: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors: list[str] = list(errors) if errors else [message]
        self.headers: dict[str, str] = dict(headers or {})

    def to_dict(self) -> dict[str, object]:
        """Render as the one JSON error shape (`error_shape`), with this class's ``code``."""
        return error_shape(self.status, self.message, self.errors, code=self.code)


class ConfigError(VocalinkError, ValueError):
    """A setting (argument or ``VOCALINK_*`` variable) is invalid."""

    status = 500
    code = "config_error"


class ProtocolError(VocalinkError, ValueError):
    """A frame could not be decoded or breaks the protocol.

    Parameters
    ----------
    message : str
        What is wrong with the frame.
    ref : str, optional
        The id (command, recording or sync id) of the frame it is about, echoed
        as ``ref`` in the ERROR reply.
    """

    status = 400
    code = "bad_message"
    ws_close_code = 1008  # policy violation

    def __init__(self, message: str, *, ref: str | None = None,
                 errors: Sequence[str] | None = None) -> None:
        super().__init__(message, errors=errors)
        self.ref = ref


class InvalidParameter(VocalinkError, ValueError):
    """A request is well-formed but a parameter has an invalid value."""

    status = 422
    code = "invalid_parameter"


class ParameterError(InvalidParameter):
    """A DSP parameter is invalid (librosa's name for it): a preset, a range, a shape.

    Raised by ``vocalink_lab.audio`` before any work starts, with one entry in
    ``errors`` per bad parameter; over REST it is a 422 like every `InvalidParameter`.
    """

    code = "invalid_dsp_parameter"


class TranscriptionUnavailable(InvalidParameter):
    """Transcription needs what is not installed here: the ``[asr]`` extra or its model.

    The message says what is missing and the one command that installs it. Nothing is
    ever downloaded to make up for it; over REST it is a 422, before any job starts.
    """

    code = "transcription_unavailable"


class BadRequest(VocalinkError, ValueError):
    """A request is malformed (not JSON, wrong content type, broken multipart...)."""

    status = 400
    code = "bad_request"


class NotFound(VocalinkError, LookupError):
    """A resource does not exist (LookupError, not KeyError: KeyError's str() adds quotes)."""

    status = 404
    code = "not_found"


class DeviceNotFound(NotFound):
    """No device with this id has ever registered."""

    code = "device_not_found"


class RecordingNotFound(NotFound):
    """No recording with this id is in the catalog."""

    code = "recording_not_found"


class TakeNotFound(NotFound):
    """No take with this id is in the catalog."""

    code = "take_not_found"


class TranscriptNotFound(NotFound):
    """The recording or take exists but has not been transcribed (or not yet)."""

    code = "transcript_not_found"


class JobNotFound(NotFound):
    """No job with this id (jobs live in memory: a restarted server has none)."""

    code = "job_not_found"


class Conflict(VocalinkError):
    """The request conflicts with what is stored (e.g. same recording id, other bytes)."""

    status = 409
    code = "conflict"


class JobCancelled(Conflict):
    """A job was cancelled before it finished (``DELETE /api/jobs/{id}``, or the server stopped)."""

    code = "job_cancelled"


class PayloadTooLarge(VocalinkError):
    """A body or file exceeds the configured size limit."""

    status = 413
    code = "too_large"


class UnsupportedMediaType(VocalinkError, ValueError):
    """A request body is of a content type this route does not take."""

    status = 415
    code = "unsupported_media_type"


class RangeNotSatisfiable(VocalinkError, ValueError):
    """A Range header asks for bytes the file does not have.

    Parameters
    ----------
    message : str
        What is wrong with the range.
    size : int, optional
        The file's size: the response then carries ``Content-Range: bytes */size``
        (RFC 9110, 15.5.17).
    """

    status = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int | None = None) -> None:
        super().__init__(
            message, headers=None if size is None else {"Content-Range": f"bytes */{size}"}
        )
        self.size = size


class AudioFormatError(UnsupportedMediaType):
    """A file is not audio that can be decoded."""

    code = "not_audio"


class Forbidden(VocalinkError):
    """The request is understood and refused: a wrong token, a foreign Origin, a foreign Host."""

    status = 403
    code = "forbidden"


class Unauthorized(VocalinkError):
    """The request carries no credential: send the controller token.

    ``Authorization: Bearer <token>``, or ``?token=`` once in a browser's URL; every client
    of ours sends ``VOCALINK_TOKEN`` (or the token file of a local data dir).
    """

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, errors: Sequence[str] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, errors=errors,
                         headers={"WWW-Authenticate": 'Bearer realm="vocalink"', **(headers or {})})


class PairingRefused(Forbidden):
    """A device's REGISTER was refused.

    It claims a paired device's id without its key, it was rejected by the operator, or
    its join code is wrong.

    Attributes
    ----------
    close_code : int
        The WebSocket close code that follows the ERROR reply (4003 impostor, 4004
        rejected).
    """

    code = "pairing_refused"
    close_code: int = 4003

    def __init__(self, message: str, *, close_code: int = 4003) -> None:
        super().__init__(message)
        self.close_code = close_code


class UpgradeRequired(VocalinkError):
    """A WebSocket route was requested without a valid WebSocket handshake."""

    status = 426
    code = "upgrade_required"


class RequestTimeout(VocalinkError, TimeoutError):
    """A client stopped sending the body it announced."""

    status = 408
    code = "request_timeout"


class WaitTimeout(VocalinkError, TimeoutError):
    """A controller waited for something that did not happen in time.

    Devices that did not connect, recordings that did not arrive, a job still
    running: what was asked for is not an error of the server's, so it reads as
    one line in a notebook, like the other user-facing errors (status under 500).
    """

    status = 408
    code = "wait_timeout"


class StorageError(VocalinkError, OSError):
    """The catalog or the recording files could not be read or written."""

    status = 500
    code = "storage_error"


class DiscoveryError(VocalinkError, OSError):
    """mDNS advertising or browsing failed (no multicast-capable interface, a failed rename)."""

    status = 503
    code = "discovery_failed"


class PreconditionFailed(VocalinkError):
    """A request lacks a precondition header (tus: ``Tus-Resumable: 1.0.0``)."""

    status = 412
    code = "precondition_failed"


class Gone(NotFound):
    """The resource existed and has expired (an abandoned resumable upload)."""

    status = 410
    code = "gone"


class CertificateMismatch(VocalinkError, ConnectionError):
    """A server's CA is not the one its pin names (TXT ``ca``, a link's ``#ca=``).

    Someone else may be answering at that address; nothing was sent to it.
    """

    status = 502
    code = "certificate_mismatch"


class ChecksumMismatch(VocalinkError, ValueError):
    """The bytes of a request do not match the checksum sent with them (tus: 460)."""

    status = 460
    code = "checksum_mismatch"


class TooBusy(VocalinkError):
    """The server is at a limit it keeps to protect its memory; try again later.

    Uploads in progress, jobs queued or running, devices connected: each has a limit
    (a ``VOCALINK_*`` setting, named in the message). Over REST it is a 503 with
    ``Retry-After``; a device's REGISTER gets an ERROR frame with this code.

    Parameters
    ----------
    message : str
        Which limit, and what frees room.
    retry_after_s : int, optional
        Seconds to wait before trying again (the ``Retry-After`` header).
    """

    status = 503
    code = "too_busy"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message, headers=None if retry_after_s is None
                         else {"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class InsufficientStorage(StorageError):
    """The disk (or the quota on it) is full: nothing more can be written.

    Raised instead of a plain `StorageError` where a write fails for want of room
    (``ENOSPC``, ``EDQUOT``, SQLite's "database or disk is full"). What was being written is
    not left half-done: a new file is removed, a resumable upload keeps what reached the
    disk (its offset says how much), no catalog row is written. Free some room and try
    again. Over REST it is a 507.
    """

    status = 507
    code = "insufficient_storage"
