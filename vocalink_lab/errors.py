"""One error tree for the whole package.

Every error carries the HTTP status it maps to when it escapes a handler (and, for
protocol errors, the WebSocket close code), so that the server renders all of them
into one JSON shape: ``{"ok": false, "error": str, "errors": [str], "status": int}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "AudioFormatError",
    "BadRequest",
    "CommandTimeout",
    "ConfigError",
    "Conflict",
    "DeviceNotFound",
    "DiscoveryError",
    "ChecksumMismatch",
    "Gone",
    "PreconditionFailed",
    "InvalidParameter",
    "NotFound",
    "ParameterError",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "ProtocolError",
    "RecordingNotFound",
    "RequestTimeout",
    "StorageError",
    "UnsupportedMediaType",
    "UpgradeRequired",
    "VocalinkError",
]


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
        """Render as the one JSON error shape."""
        return {"ok": False, "error": self.message, "errors": self.errors, "status": self.status}


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

    code = "invalid_parameter"


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


class Conflict(VocalinkError):
    """The request conflicts with what is stored (e.g. same recording id, other bytes)."""

    status = 409
    code = "conflict"


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


class UpgradeRequired(VocalinkError):
    """A WebSocket route was requested without a valid WebSocket handshake."""

    status = 426
    code = "upgrade_required"


class RequestTimeout(VocalinkError, TimeoutError):
    """A client stopped sending the body it announced."""

    status = 408
    code = "request_timeout"


class CommandTimeout(VocalinkError, TimeoutError):
    """A device did not ACK a command in time."""

    status = 504
    code = "command_timeout"


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


class ChecksumMismatch(VocalinkError, ValueError):
    """The bytes of a request do not match the checksum sent with them (tus: 460)."""

    status = 460
    code = "checksum_mismatch"
