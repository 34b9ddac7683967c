"""The VocalLink Android app's REST side: ``POST /sessions`` and ``POST /recordings/{rid}``.

Both are open at the HTTP level (the app sends no credential): a session is only a
request to be let in (pending until approved, `hub.android`), and a recording's upload
is accepted only for a ``rid`` the server minted when the app staged that file, which only
that app learnt. Thin handlers: the sessions and stagings are the hub's.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec

from ..audio import AAC_PRIMING_SPREAD, aac_priming, probe
from ..errors import BadRequest, InvalidParameter, RecordingNotFound
from ..hub import AndroidSessions
from ..hub.android import first_sample_window
from ..protocol.android import SessionMetadata
from .auth import Access
from .base import JsonHandler
from .ingest import UploadMeta
from .upload import UploadHandler

__all__ = ["AppRecordingHandler", "AppSessionsHandler", "RID_PATTERN"]

#: Samples in an AAC frame: the encoder pads the last one.
AAC_FRAME = 1024
#: A staged recording's id, as the app puts it in the URL.
RID_PATTERN = r"([A-Za-z0-9][A-Za-z0-9._-]{0,63})"
_SESSION = msgspec.json.Decoder(SessionMetadata)
_ENCODER = msgspec.json.Encoder()


class AppSessionsHandler(JsonHandler):
    """``POST /sessions``: the app asks for a session; it is answered with its id."""

    access = Access.PUBLIC

    def initialize(self, android: AndroidSessions) -> None:
        self.android = android

    def post(self) -> None:
        body = self.json_body()  # the one place that checks type and size
        try:
            meta = _SESSION.decode(msgspec.json.encode(body))
        except msgspec.ValidationError as exc:
            raise InvalidParameter(f"not a session of the VocalLink app: {exc}") from None
        session = self.android.stage(meta, remote=str(self.request.remote_ip))
        self.set_status(200)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(_ENCODER.encode(session))


class AppRecordingHandler(UploadHandler):
    """``POST /recordings/{rid}``: the file the app staged as ``rid``, multipart ``file``.

    The recording goes into the catalog under ``rid`` with the device, take and start the
    app's session gave it; its start is moved back by the AAC priming the decoded audio
    carries (none when the file declares it), and its uncertainty grows by what is not
    known of it.
    """

    access = Access.PUBLIC
    fields: tuple[str, ...] = ()

    def initialize(self, android: AndroidSessions, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.android = android

    async def prepare(self) -> None:
        if self.request.method == "POST":
            rid = self.path_args[0] if self.path_args else ""
            if self.android.staged(rid) is None:
                raise RecordingNotFound(
                    f"no staged recording '{rid[:64]}': stage it first (rec_stage on the "
                    "control socket), then upload to the URL rec_staged names")
        await super().prepare()

    async def post(self, rid: str = "") -> None:
        await super().post()

    def _metadata(self) -> UploadMeta:
        if self._fields:
            raise BadRequest("the app's upload has one part, 'file'")
        rid = self.path_args[0]
        staged = self.android.staged(rid)
        if staged is None:  # staged when the request began; gone if uploaded meanwhile
            raise RecordingNotFound(f"recording '{rid}' is no longer staged")
        return UploadMeta(recording_id=staged.rid, device_id=staged.device_id,
                          take_id=staged.take_id, started_at=staged.device_started_at,
                          original_name=staged.rec_name, start_bound_s=staged.start_bound_s)

    async def _before_ingest(self, meta: UploadMeta, path: Path) -> UploadMeta:
        """Place the first sample: between the START and the STOP, by the file's length.

        The decoded audio's priming (none when the file declares it) is taken off its
        length; what is assumed of it widens the bound.
        """
        priming, declared = await asyncio.to_thread(aac_priming, path)
        info = await asyncio.to_thread(probe, path)
        rate = info.sample_rate
        staged = self.android.staged(self.path_args[0])
        started, bound = meta.started_at, meta.start_bound_s
        anchored = "start"
        guess_s = AAC_PRIMING_SPREAD / rate if priming else 0.0
        # The file's length is known to an AAC frame (the encoder pads the last one; an edit
        # list rounds to its millisecond), and an undeclared priming is a guess. Measured
        # with the replayed app: a millisecond's tolerance left one file in 64 uncovered.
        error_s = AAC_FRAME / rate + guess_s
        window = None if staged is None else first_sample_window(
            staged, (info.frames - priming) / rate, error_s)
        estimate = self.android.hub.clock_estimate(meta.device_id) if meta.device_id else None
        if window is not None and estimate is not None:
            at, bound = window
            # The decoded audio starts ``priming`` samples before the first captured one.
            started = estimate.to_device(at - priming / rate)
            anchored = "start and stop"
        elif priming and started is not None:
            started -= priming / rate
            bound += guess_s
        extra = {"android": {"priming_samples": priming, "priming_declared": declared,
                             "rec_name": meta.original_name, "anchored": anchored}}
        return UploadMeta(recording_id=meta.recording_id, device_id=meta.device_id,
                          take_id=meta.take_id, started_at=started,
                          original_name=meta.original_name, start_bound_s=bound,
                          extra_params=extra)

    def _stored(self, recording_id: str) -> None:
        self.android.uploaded(recording_id)
