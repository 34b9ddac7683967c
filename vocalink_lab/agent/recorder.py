"""The take recorder: source -> crash-safe spool -> outbox, one take at a time.

A take starts on a START command (at once, or at the device-clock instant it names, to the
sample), reads its source block by block into a `SpoolWriter`, and ends on STOP, when its
``duration_s`` is reached, or when the agent stops; its finished file then goes into the
`Outbox`. Whether the server is there or not makes no difference to it, beyond the
``recorded_offline`` flag of the queued item.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np

from ..levels import amplitude_dbfs
from ..protocol import Command
from .blocks import Source
from .clock import DeviceClock
from .microphone import NoMicrophone
from .outbox import Outbox, OutboxItem
from .sources import make_source
from .spool import FORMATS, FinishedRecording, SpoolWriter

__all__ = ["Recorder", "Refused", "short_reason"]

log = logging.getLogger(__name__)


class Refused(Exception):
    """A command the agent cannot obey now; the reason goes into the FAILED ACK."""


def _ended(take: _Take) -> bool:
    """Whether the take has reached its STOP instant or its recorded duration."""
    if take.stop_frame is not None and take.source_frames >= take.stop_frame:
        return True
    return take.max_frames is not None and take.spool.frames >= take.max_frames


class _Take:
    """One recording in progress."""

    def __init__(self, *, source: Source, spool: SpoolWriter, command: Command,
                 max_frames: int | None, offline: bool) -> None:
        self.source = source
        self.spool = spool
        self.command = command
        #: Recorded frames at most (a START's ``duration_s``: pauses do not count).
        self.max_frames = max_frames
        #: A scheduled STOP: the source frame (counted from the first sample, pauses
        #: included) at which the take ends, whether paused or not.
        self.stop_frame: int | None = None
        #: Source frames taken so far, recorded or skipped while paused.
        self.source_frames = 0
        #: The source's index of the take's first frame.
        self.first_index = 0
        #: A scheduled STOP's instant (device clock), from which `stop_frame` is worked out
        #: again on every block as the source's audio clock fit improves.
        self.stop_at: float | None = None
        self.offline = offline
        self.paused = False
        self.stop = asyncio.Event()
        self.task: asyncio.Task[FinishedRecording] | None = None
        self.started_mono = time.monotonic()


class Recorder:
    """Records one take at a time into the outbox. Loop-only.

    Parameters
    ----------
    spool_dir : Path
        Where takes are spooled while they record (`recover` it at start-up).
    outbox : Outbox
        Where finished takes go.
    device_id : str
        Stored with every recording.
    source : str
        `make_source` spec, opened afresh for each take.
    sample_rate, channels : int
        Defaults when a START does not say.
    format : {"wav", "flac"}
        Default file format.
    clock : DeviceClock
        The device's clock: blocks and ``started_at`` are on it.
    on_queued : callable, optional
        Awaited with each item as it enters the outbox (the agent announces it).
    on_finished : callable, optional
        Called with each recording a take finished into the outbox (the agent uploads).
    """

    def __init__(self, *, spool_dir: Path, outbox: Outbox, device_id: str, source: str,
                 sample_rate: int, channels: int, format: str, clock: DeviceClock,
                 on_queued: Callable[[OutboxItem], Awaitable[None]] | None = None,
                 on_finished: Callable[[FinishedRecording], None] | None = None) -> None:
        self.spool_dir = spool_dir
        self.outbox = outbox
        self.device_id = device_id
        self.source = source
        self.sample_rate = sample_rate
        self.channels = channels
        self.format = format
        self.clock = clock
        self.on_queued = on_queued
        self.on_finished = on_finished
        #: The latest take finished, for a STOP that comes after it stopped by itself.
        self.last_finished: FinishedRecording | None = None
        self._take: _Take | None = None
        #: (sum of squares, samples, peak) of the latest blocks, for STATUS.
        self._levels: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=64)

    @property
    def recording(self) -> bool:
        """Whether a take is in progress (paused or not)."""
        return self._take is not None

    @property
    def paused(self) -> bool:
        """Whether the take in progress is paused."""
        return self._take is not None and self._take.paused

    @property
    def recording_id(self) -> str | None:
        """The recording in progress, if any."""
        return self._take.spool.recording_id if self._take is not None else None

    @property
    def elapsed_s(self) -> float | None:
        """Seconds recorded so far in the take in progress, if any."""
        return self._take.spool.duration_s if self._take is not None else None

    def went_offline(self) -> None:
        """Note that the server is gone: part of the take in progress is recorded without it."""
        if self._take is not None:
            self._take.offline = True

    def take_levels(self) -> tuple[float | None, float | None]:
        """RMS and peak level of the blocks recorded since the last call, and forget them.

        Returns
        -------
        level_dbfs, peak_dbfs : float or None
            ``None`` when nothing was recorded since.
        """
        if not self._levels:
            return None, None
        sumsq = sum(x[0] for x in self._levels)
        count = sum(x[1] for x in self._levels)
        level = amplitude_dbfs(math.sqrt(sumsq / max(count, 1)))
        peak = amplitude_dbfs(max(x[2] for x in self._levels))
        self._levels.clear()
        return level, peak

    async def start(self, command: Command, *, offline: bool) -> tuple[str, float]:
        """Start a take as a START command says.

        Parameters
        ----------
        command : Command
            The START: its ``params`` (format, sample rate, channels, duration), ``take_id``
            and ``start_at`` (device clock) are obeyed.
        offline : bool
            Whether the server is unreachable now.

        Returns
        -------
        recording_id : str
        started_at : float
            Device-clock instant of the first frame.

        Raises
        ------
        Refused
            Already recording, an unsupported format, no microphone, or the source or the
            spool cannot be opened.
        """
        if self._take is not None:
            raise Refused(f"already recording {self._take.spool.recording_id}")
        params = command.params
        fmt = (params.format or self.format).lower()
        if fmt not in FORMATS:
            raise Refused(f"format {fmt!r} is not supported (use {' or '.join(FORMATS)})")
        rate = params.sample_rate or self.sample_rate
        channels = params.channels or self.channels
        try:
            source = make_source(self.source, sample_rate=rate, channels=channels,
                                 clock=self.clock)
            await source.open()
        except NoMicrophone as exc:
            raise Refused(f"no microphone: {exc}") from None
        except (ValueError, OSError) as exc:
            raise Refused(f"cannot open the source: {short_reason(exc)}") from None
        recording_id = f"rec-{uuid.uuid4().hex[:20]}"
        try:
            samples, started_at, first_index = await _first_samples(source, command.start_at)
            spool = SpoolWriter(self.spool_dir / f"{recording_id}.wav",
                                source.sample_rate, source.channels, recording_id=recording_id,
                                take_id=command.take_id, device_id=self.device_id,
                                started_at=started_at, format=fmt)
            await spool.open()
        except (OSError, EOFError) as exc:
            await source.close()
            raise Refused(f"cannot record: {short_reason(exc)}") from None
        max_frames = (round(params.duration_s * source.sample_rate)
                      if params.duration_s is not None else None)
        take = _Take(source=source, spool=spool, command=command, max_frames=max_frames,
                     offline=offline)
        take.first_index = first_index
        self._take = take
        await self._take_block(take, samples)
        take.task = asyncio.get_running_loop().create_task(self._record(take))
        take.task.add_done_callback(self._take_ended)
        late = "" if command.start_at is None else (
            f", {max(0.0, started_at - command.start_at) * 1000:.1f} ms after the set instant")
        log.info("recording %s (take %s)%s", recording_id, command.take_id, late)
        return recording_id, started_at

    async def stop(self, take_id: str | None, at: float | None) -> FinishedRecording:
        """End the take in progress, now or at an instant; return it once in the outbox.

        Parameters
        ----------
        take_id : str or None
            The take the STOP is for: a take that already stopped by itself (its duration
            reached) is returned again if it is that one (or if ``None``).
        at : float or None
            Device-clock instant of the last frame's end: the take's length is set to the
            sample. ``None``: stop now.

        Returns
        -------
        FinishedRecording

        Raises
        ------
        Refused
            Not recording.
        """
        current = self._take
        if current is None:
            last = self.last_finished
            if last is not None and take_id in (None, last.take_id):
                return last  # it stopped by itself
            raise Refused("not recording")
        if at is not None and current.spool.started_at is not None:
            # Stop at that instant, to the sample, on the source's timeline: a pause skips
            # frames but not time, and a paused take ends at the instant all the same.
            current.stop_at = at if current.stop_at is None else min(current.stop_at, at)
            current.stop_frame = _stop_frame(current)
            assert current.task is not None
            return await asyncio.shield(current.task)
        return await self.finish()

    def pause(self, pause: bool) -> str:
        """Pause (``True``) or resume (``False``) the take in progress; return its id.

        Parameters
        ----------
        pause : bool
            What the command asks.

        Returns
        -------
        str
            The recording id.

        Raises
        ------
        Refused
            Not recording, or already in that state.
        """
        take = self._take
        if take is None:
            raise Refused("not recording")
        if take.paused == pause:
            raise Refused("already paused" if pause else "not paused")
        take.paused = pause
        return take.spool.recording_id

    async def finish(self) -> FinishedRecording:
        """Stop the take in progress now and wait until it is in the outbox.

        Returns
        -------
        FinishedRecording
        """
        take = self._take
        assert take is not None and take.task is not None
        take.stop.set()
        return await asyncio.shield(take.task)

    async def _take_block(self, take: _Take, samples: np.ndarray) -> bool:
        """Take a block from the source: written unless paused, cut at the take's end.

        Returns False once the take has ended (its STOP instant or its duration reached).
        """
        first = take.source_frames
        take.source_frames += len(samples)
        if take.stop_at is not None:
            take.stop_frame = _stop_frame(take)  # on the audio clock fit as it is now
        if take.stop_frame is not None:
            samples = samples[: max(take.stop_frame - first, 0)]
        if not take.paused:
            await self._write(take, samples)
        return not _ended(take)

    async def _write(self, take: _Take, samples: np.ndarray) -> None:
        """Write a block, cut at the take's recorded length (``max_frames``)."""
        if take.max_frames is not None:
            samples = samples[: max(take.max_frames - take.spool.frames, 0)]
        if len(samples):
            await take.spool.write(samples)
            block = np.asarray(samples, dtype=np.float64)
            self._levels.append((float(np.sum(block * block)), block.size,
                                 float(np.max(np.abs(block)))))

    async def _record(self, take: _Take) -> FinishedRecording:
        try:
            while not take.stop.is_set():
                if _ended(take):
                    break  # its STOP instant, or its duration, is reached
                reader = asyncio.ensure_future(take.source.read())
                stopper = asyncio.ensure_future(take.stop.wait())
                done, _ = await asyncio.wait({reader, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if reader not in done:
                    reader.cancel()
                    break
                if not await self._take_block(take, reader.result().samples):
                    break
        finally:
            await take.source.close()
        # The source's audio clock, fitted over the whole take, goes with the recording.
        take.spool.audio_clock = take.source.audio_clock_report()
        rec = await take.spool.finalize()
        item = await asyncio.to_thread(self.outbox.add, rec, recorded_offline=take.offline)
        if self.on_queued is not None:
            await self.on_queued(item)
        return rec

    def _take_ended(self, task: asyncio.Task[FinishedRecording]) -> None:
        take = self._take
        if take is None or take.task is not task:
            return
        self._take = None
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("recording failed: %s", task.exception())
            return
        self.last_finished = task.result()
        if self.on_finished is not None:
            self.on_finished(self.last_finished)


def _stop_frame(take: _Take) -> int:
    """The take's frame (counted from its first) at which its scheduled STOP instant falls."""
    assert take.stop_at is not None and take.spool.started_at is not None
    at = take.source.frame_at(take.stop_at)
    if at is None:  # no audio clock: frames at the nominal rate from the first one
        frames = round((take.stop_at - take.spool.started_at) * take.source.sample_rate)
    else:
        frames = round(at - take.first_index)
    return max(0, frames)


async def _first_samples(source: Source,
                         start_at: float | None) -> tuple[np.ndarray, float, int]:
    """The first samples of a take, the device-clock instant and the index of the first one.

    With ``start_at`` (device clock) the take begins at the sample nearest to it: blocks
    before it are dropped and the block that spans it is cut. A START that arrives late
    starts at once (its ACK's ``started_at`` shows by how much). Sources with an audio
    clock are placed on its fit (`Source.frame_at`), others at the nominal rate from
    each block's ``t0``.
    """
    block = await source.read()
    rate = source.sample_rate

    def index_at(t: float) -> float:
        at = source.frame_at(t)
        return at if at is not None else block.index + (t - block.t0) * rate

    if start_at is not None:
        while index_at(start_at) >= block.index + block.frames - 0.5:
            block = await source.read()
        skip = min(max(0, round(index_at(start_at) - block.index)), block.frames - 1)
    else:
        skip = 0
    first = block.index + skip
    started_at = source.frame_time(first)
    if started_at is None:
        started_at = block.t0 + skip / rate
    return block.samples[skip:], started_at, first


def short_reason(exc: BaseException) -> str:
    """An exception as one line short enough for a log line or an ACK's ``error``.

    Parameters
    ----------
    exc : BaseException
        What went wrong.

    Returns
    -------
    str
        Its message (its type's name if it has none), cut at 300 characters.
    """
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:297] + "..."
