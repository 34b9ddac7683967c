"""Turning a received file into a catalogued recording: probe, de-duplicate, commit."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..audio import probe
from ..errors import Conflict, Forbidden, InvalidParameter
from ..hub import Hub, Topic
from ..protocol import MAX_INSTANT_S, is_plausible_instant, is_safe_id, json_number
from ..storage import Catalog, Recording, RecordingStore, hash_file

__all__ = ["UPLOAD_FIELDS", "Ingestor", "UploadMeta", "check_uploader", "parse_audio_clock"]

log = logging.getLogger(__name__)


_DERIVED_PREFIX = {"enhanced": "enh", "merged": "mrg"}

#: What a client may say about an uploaded file, on either upload route.
UPLOAD_FIELDS = ("device_id", "recording_id", "take_id", "started_at", "sha256", "audio_clock")
#: What an ``audio_clock`` field may hold: the device's fit of its sound card's clock.
AUDIO_CLOCK_NUMBERS = ("rate_hz", "ppm", "residual_us", "points")
AUDIO_CLOCK_SOURCES = ("adc", "callback")
_AUDIO_CLOCK_MAX_CHARS = 512


def check_uploader(device_id: str | None, uploader: str | None) -> None:
    """Refuse an upload a device makes in another device's name.

    Parameters
    ----------
    device_id : str or None
        The ``device_id`` the upload names.
    uploader : str or None
        The device whose key the request presented; ``None`` for a controller (or with
        authentication off), who may upload in any name.

    Raises
    ------
    Forbidden
        A device's key, and another device (or none) named.
    """
    if uploader is not None and device_id != uploader:
        raise Forbidden(f"device '{uploader}' may upload its own recordings only (this "
                        f"upload names device '{str(device_id)[:64]}')")


@dataclass(frozen=True, slots=True)
class UploadMeta:
    """What a client says about an uploaded file (validated ids; nothing about the audio)."""

    recording_id: str | None = None
    device_id: str | None = None
    take_id: str | None = None
    started_at: float | None = None  # the device's clock, a plausible instant
    sha256: str | None = None
    original_name: str | None = None
    #: The device's fit of its sound card's clock over the take (`parse_audio_clock`).
    audio_clock: dict[str, Any] | None = None
    #: How far the start may be off beyond the clock estimate's own uncertainty (seconds):
    #: a device that never says when it started (the Android app) is bounded by the server.
    start_bound_s: float = 0.0
    #: More to keep in the recording's ``params`` (what the server knows of its making).
    extra_params: Mapping[str, Any] | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[str, str], original_name: str | None = None
                    ) -> UploadMeta:
        """Validate the text fields of an upload (form fields or tus metadata).

        Empty values count as absent; unknown keys are the caller's business.
        ``started_at`` must be an instant a clock can read: a finite number of seconds
        since 1970, from 0 to below 1e11 (`protocol.MAX_INSTANT_S`). A recording may have
        been made long ago (offline), so it is not compared with the server's clock.

        Raises
        ------
        InvalidParameter
            Listing every invalid field.
        """
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name in UPLOAD_FIELDS:
            text = fields.get(name, "").strip()
            if text == "":
                continue
            if name == "started_at":
                try:
                    number = float(text)
                except ValueError:
                    number = math.nan
                if not math.isfinite(number):
                    problems.append(f"started_at must be a number of seconds, got '{text[:40]}'")
                elif not is_plausible_instant(number):
                    problems.append(
                        "started_at must be an instant in seconds since 1970, from 0 to below "
                        f"{MAX_INSTANT_S:.0e}, got '{text[:40]}'")
                values[name] = number
            elif name == "audio_clock":
                try:
                    values[name] = parse_audio_clock(text)
                except ValueError as exc:
                    problems.append(f"audio_clock: {exc}")
            elif name == "sha256":
                digest = text.lower()
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    problems.append("sha256 must be 64 hexadecimal digits")
                values[name] = digest
            else:
                if not is_safe_id(text):
                    problems.append(
                        f"{name} '{text[:80]}' is not a valid id (letters, digits, '.', '_', "
                        "'-'; starting with a letter or digit; at most 64 characters)"
                    )
                values[name] = text
        if problems:
            raise InvalidParameter("; ".join(problems), errors=problems)
        return cls(original_name=original_name, **values)


def parse_audio_clock(text: str) -> dict[str, Any]:
    """Validate an upload's ``audio_clock`` field: JSON, as the agent writes it.

    Parameters
    ----------
    text : str
        ``{"source": "adc" | "callback", "rate_hz": ..., "ppm": ..., "residual_us": ...,
        "points": ...}``; every number finite, ``rate_hz`` positive, the rest >= 0 but
        ``ppm``. Unknown keys are dropped (a newer agent may say more).

    Returns
    -------
    dict
        The known keys.

    Raises
    ------
    ValueError
        Not such an object, saying what is wrong.
    """
    if len(text) > _AUDIO_CLOCK_MAX_CHARS:
        raise ValueError(f"longer than {_AUDIO_CLOCK_MAX_CHARS} characters")
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    out: dict[str, Any] = {}
    if value.get("source") not in AUDIO_CLOCK_SOURCES:
        raise ValueError(f"source must be one of {', '.join(AUDIO_CLOCK_SOURCES)}")
    out["source"] = value["source"]
    for key in AUDIO_CLOCK_NUMBERS:
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, int | float) \
                or not math.isfinite(number):
            raise ValueError(f"{key} must be a finite number")
        if key != "ppm" and number < 0 or key == "rate_hz" and number == 0:
            raise ValueError(f"{key} must be {'positive' if key == 'rate_hz' else '>= 0'}")
        out[key] = number
    return out


class Ingestor:
    """Catalogs received files. Idempotent by recording id.

    The audio facts (format, rate, channels, length) are read from the file in a
    worker thread. The file is moved into place before its row is written, so a
    crash leaves at worst an uncatalogued file, which the start-up check reports.
    """

    def __init__(self, *, catalog: Catalog, store: RecordingStore, hub: Hub) -> None:
        self.catalog = catalog
        self.store = store
        self.hub = hub
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    async def ingest(
        self, temp: Path, *, size: int, sha256: str, meta: UploadMeta
    ) -> tuple[Recording, bool]:
        """Catalog the complete file ``temp``; return ``(recording, created)``.

        ``created`` is False when the same recording id was already stored with
        the same bytes (a retried upload); ``temp`` is then deleted.

        Raises
        ------
        InvalidParameter
            The sha256 the client sent does not match the bytes received.
        AudioFormatError
            The file is not decodable audio.
        Conflict
            The recording id is taken by different bytes.
        """
        try:
            if meta.sha256 is not None and meta.sha256 != sha256:
                raise InvalidParameter(
                    f"sha256 mismatch: the received file hashes to {sha256}, "
                    f"the upload said {meta.sha256}; the file was not stored"
                )
            info = await asyncio.to_thread(probe, temp)
            recording_id = meta.recording_id or f"rec-{uuid.uuid4().hex[:16]}"
            lock = self._locks.setdefault(recording_id, asyncio.Lock())
            async with lock:
                existing = await self.catalog.find(recording_id)
                if existing is not None:
                    if existing.sha256 != sha256:
                        raise Conflict(
                            f"recording '{recording_id}' is already stored with other content "
                            f"(sha256 {existing.sha256}); nothing was changed"
                        )
                    await asyncio.to_thread(temp.unlink, missing_ok=True)
                    return existing, False
                path = await asyncio.to_thread(
                    self.store.commit, temp, recording_id=recording_id, ext=info.format,
                    take_id=meta.take_id,
                )
                recording = Recording(
                    id=recording_id,
                    path=path,
                    format=info.format,
                    codec=info.codec,
                    sample_rate=info.sample_rate,
                    channels=info.channels,
                    frames=info.frames,
                    duration_s=info.duration_s,
                    bytes=size,
                    sha256=sha256,
                    created_at=time.time(),
                    kind="original",
                    take_id=meta.take_id,
                    device_id=meta.device_id,
                    device_name=self._device_name(meta.device_id),
                    started_at=self._server_time(meta.device_id, meta.started_at),
                    params={**self._clock_params(meta.device_id, meta.started_at,
                                                 meta.audio_clock, meta.start_bound_s),
                            **(meta.extra_params or {})},
                    original_name=meta.original_name,
                )
                await self._catalogue(recording)
        except BaseException:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
            raise
        log.info("stored %s (%s, %.1f s, %d bytes)", recording.id, info.format,
                 info.duration_s, size)
        self.hub.events.publish(Topic.RECORDING_ADDED, recording=recording.to_dict())
        return recording, True

    async def add_derived(
        self, temp: Path, *, kind: str, parents: Sequence[Recording], params: Mapping[str, Any],
        take_id: str | None = None, device_id: str | None = None,
        device_name: str | None = None, started_at: float | None = None,
    ) -> Recording:
        """Catalog a file a job made from ``parents`` (enhanced or merged) under ``derived/``.

        ``temp`` is fsynced, hashed and probed off the loop, moved into place, and
        only then catalogued; it is removed if anything fails. Originals are never
        touched.
        """
        try:
            hasher = await asyncio.to_thread(hash_file, temp, fsync=True)
            info = await asyncio.to_thread(probe, temp)
            size = (await asyncio.to_thread(temp.stat)).st_size
            recording_id = f"{_DERIVED_PREFIX[kind]}-{uuid.uuid4().hex[:16]}"
            path = await asyncio.to_thread(self.store.commit, temp, recording_id=recording_id,
                                           ext=info.format, derived=True)
        except BaseException:
            await asyncio.to_thread(temp.unlink, missing_ok=True)
            raise
        recording = Recording(
            id=recording_id, path=path, format=info.format, codec=info.codec,
            sample_rate=info.sample_rate, channels=info.channels, frames=info.frames,
            duration_s=info.duration_s, bytes=size, sha256=hasher.hexdigest(),
            created_at=time.time(), kind=kind, take_id=take_id, device_id=device_id,
            device_name=device_name, parents=tuple(p.id for p in parents), params=dict(params),
            started_at=started_at,
        )
        await self._catalogue(recording)
        log.info("stored %s %s from %s", kind, recording.id, ", ".join(recording.parents))
        self.hub.events.publish(Topic.RECORDING_ADDED, recording=recording.to_dict())
        return recording

    async def _catalogue(self, recording: Recording) -> None:
        """Add the row of a file already moved into place; if that fails, take the file out.

        Nothing is lost: the client (a device's outbox, a job) still holds what it sent
        and gets the error; a file without a row would only be reported at every start.
        """
        try:
            await self.catalog.add(recording)
        except BaseException:
            await asyncio.to_thread(self.store.remove, recording.path)
            raise

    def _device_name(self, device_id: str | None) -> str | None:
        if device_id is None or device_id not in self.hub.registry:
            return None
        return self.hub.registry.get(device_id).name

    def _clock_params(self, device_id: str | None, started_at: float | None,
                      audio_clock: Mapping[str, Any] | None = None,
                      start_bound_s: float = 0.0) -> dict[str, Any]:
        """The device's own start instant, its clock estimate at ingest, its audio clock.

        With the first two, ``clock["start_uncertainty_s"]`` says how far the start
        converted to server time may be from the truth (`ClockEstimate.uncertainty_at`,
        plus the audio clock's fit residual, plus ``start_bound_s``): what a take's skew
        report bounds its skew with.
        """
        params: dict[str, Any] = {}
        if started_at is not None:
            params["device_started_at"] = started_at
        if audio_clock is not None:
            params["audio_clock"] = dict(audio_clock)
        if device_id is not None and device_id in self.hub.registry:
            estimate = self.hub.clock_estimate(device_id)
            if estimate is not None:
                params["clock"] = estimate.to_dict()
                if started_at is not None:
                    residual = (audio_clock or {}).get("residual_us") or 0.0
                    params["clock"]["start_uncertainty_s"] = json_number(
                        estimate.uncertainty_at(estimate.to_server(started_at))
                        + residual * 1e-6 + start_bound_s)
        return params

    def _server_time(self, device_id: str | None, started_at: float | None) -> float | None:
        """The device's start instant in server time, when its clock offset is known.

        ``None`` when the conversion gives no plausible instant (an estimate made wild by
        a hostile device): a start unknown is better than an absurd one in the catalog.
        The device's own reading stays in ``params["device_started_at"]``.
        """
        if started_at is None or device_id is None or device_id not in self.hub.registry:
            return started_at
        estimate = self.hub.clock_estimate(device_id)
        if estimate is None:
            return started_at
        server_time = estimate.to_server(started_at)
        if not is_plausible_instant(server_time):
            log.warning("recording of %s: its start %r converts to %r with the device's clock "
                        "estimate, which is not an instant; stored without a start",
                        device_id, started_at, server_time)
            return None
        return server_time
