"""Where a device's audio comes from: synthetic signals, a file played as if live, a microphone.

Every `Source` hands out `Block` s of about ``block_s`` seconds, in real time, stamped with
the device clock (`DeviceClock`) and with the index of their first frame. Blocks are
contiguous: each starts where the previous one ended, and none is ever dropped or repeated.

Synthetic and file sources are *paced*: block ``k`` is due when the device clock reaches
``t_open + (frames so far + frames in k) / sample_rate``, computed from the open instant rather
than by adding up sleeps, so that loop jitter never accumulates. A late block is produced at
once. On a simulated device with drift, the sample clock therefore drifts with the device
clock, like a real crystal would.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import importlib
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from .clock import DeviceClock

__all__ = [
    "Block",
    "ClickSource",
    "FileSource",
    "MicrophoneSource",
    "NoMicrophone",
    "SilenceSource",
    "Source",
    "ToneSource",
    "levels",
    "make_source",
]

log = logging.getLogger(__name__)

#: Floor of `levels`, in dBFS: what digital silence reads as.
FLOOR_DBFS = -120.0

_SPECS = ('"tone[:FREQ[:AMPLITUDE]]", "noise[:LEVEL]", "silence", "click[:PERIOD]", '
          '"file:PATH", "mic[:DEVICE]"')


@dataclass(frozen=True, slots=True, eq=False)
class Block:
    """A block of captured audio.

    Attributes
    ----------
    samples : np.ndarray, shape=(frames, channels), dtype=float32
        Audio in [-1, 1].
    t0 : float
        Device-clock time (`DeviceClock.now` scale) of the first frame.
    index : int
        Frame index of the first frame, counted from the source's `Source.open`.
    """

    samples: npt.NDArray[np.float32]
    t0: float
    index: int

    @property
    def frames(self) -> int:
        """Number of frames in the block."""
        return int(self.samples.shape[0])


class NoMicrophone(RuntimeError):
    """No microphone can be opened: sounddevice or PortAudio is missing, or no input exists."""


class Source(abc.ABC):
    """A real-time audio source.

    One consumer awaits `read` in a loop; ``async with source:`` opens and closes it, and
    ``async for block in source`` reads until the source ends (`EOFError`).

    Attributes
    ----------
    sample_rate : int
        Frames per second.
    channels : int
        Channel count.
    name : str
        Human-readable description (e.g. ``"tone:440"``).
    block_s : float
        Nominal block duration in seconds.
    clock : DeviceClock
        The clock block times are read on.
    """

    sample_rate: int
    channels: int
    name: str
    block_s: float
    clock: DeviceClock

    @property
    def block_frames(self) -> int:
        """Frames in a full block (``round(block_s * sample_rate)``, at least 1)."""
        return max(1, round(self.block_s * self.sample_rate))

    @abc.abstractmethod
    async def open(self) -> None:
        """Start capturing; frame 0 is the first frame after this call. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop capturing and release the device or file. Idempotent."""

    @abc.abstractmethod
    async def read(self) -> Block:
        """Wait for the next block, then return it.

        Returns
        -------
        Block
            The block that starts where the previous one ended.

        Raises
        ------
        EOFError
            The source has ended (a non-looping file, a closed microphone).
        """

    async def __aenter__(self) -> Source:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def __aiter__(self) -> AsyncIterator[Block]:
        while True:
            try:
                block = await self.read()
            except EOFError:
                return
            yield block

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r} {self.sample_rate} Hz "
                f"x{self.channels}>")


class _PacedSource(Source):
    """A source that makes its blocks on demand, released at their due time."""

    def __init__(self, *, name: str, sample_rate: int, channels: int, block_s: float,
                 clock: DeviceClock | None) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, not "
                             f"{sample_rate} and {channels}")
        if not block_s > 0:
            raise ValueError(f"block_s must be positive, not {block_s}")
        self.name = name
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_s = float(block_s)
        self.clock = clock if clock is not None else DeviceClock()
        self._open = False
        self._t_open = 0.0
        self._index = 0
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self._open:
            return
        self._open_hook()
        self._t_open = self.clock.now()
        self._index = 0
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        self._close_hook()

    async def read(self) -> Block:
        async with self._lock:  # two readers would otherwise get the same frames
            if not self._open:
                raise RuntimeError(f"{self!r} is not open")
            n = self._next_frames()
            if n == 0:
                raise EOFError(f"{self.name} has ended")
            t0 = self._t_open + self._index / self.sample_rate
            await self.clock.sleep_until(t0 + n / self.sample_rate)
            # No await from here on: a read cancelled in its sleep has consumed nothing.
            samples = self._make(self._index, n)
            block = Block(samples=samples, t0=t0, index=self._index)
            self._index += n
            return block

    def _open_hook(self) -> None:
        """Acquire what `_make` needs."""

    def _close_hook(self) -> None:
        """Release what `_open_hook` acquired."""

    def _next_frames(self) -> int:
        """Frames in the next block; 0 at the end of the source."""
        return self.block_frames

    @abc.abstractmethod
    def _make(self, index: int, frames: int) -> npt.NDArray[np.float32]:
        """Frames ``index .. index + frames`` as float32, shape ``(frames, channels)``."""


class ToneSource(_PacedSource):
    """A sine wave, plus optional white noise, identical on every channel.

    Parameters
    ----------
    frequency_hz : float, default 440.0
        Sine frequency; below Nyquist.
    amplitude : float, default 0.3
        Sine peak amplitude, in [0, 1].
    sample_rate : int, default 48000
        Frames per second.
    channels : int, default 1
        Channel count (every channel carries the same signal).
    block_s : float, default 0.02
        Block duration in seconds.
    clock : DeviceClock, optional
        Device clock; a fresh default clock if omitted.
    noise : float, default 0.0
        Standard deviation of added Gaussian white noise. The sum is clipped to [-1, 1].
    seed : int, optional
        Seed of the noise generator, for reproducible noise.

    Notes
    -----
    The phase is computed from the absolute frame index, so it is continuous across blocks
    whatever their sizes, and does not wander over long recordings.
    """

    def __init__(
        self,
        frequency_hz: float = 440.0,
        amplitude: float = 0.3,
        sample_rate: int = 48000,
        channels: int = 1,
        block_s: float = 0.02,
        clock: DeviceClock | None = None,
        noise: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not 0 < frequency_hz < sample_rate / 2:
            raise ValueError(f"frequency_hz must be in (0, {sample_rate / 2:g}), "
                             f"not {frequency_hz}")
        if not 0 <= amplitude <= 1:
            raise ValueError(f"amplitude must be in [0, 1], not {amplitude}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, not {noise}")
        if amplitude:
            name = f"tone:{frequency_hz:g}:{amplitude:g}"
        else:
            name = f"noise:{noise:g}" if noise else "silence"
        super().__init__(name=name, sample_rate=sample_rate, channels=channels,
                         block_s=block_s, clock=clock)
        self.frequency_hz = float(frequency_hz)
        self.amplitude = float(amplitude)
        self.noise = float(noise)
        self._rng = np.random.default_rng(seed)

    def _make(self, index: int, frames: int) -> npt.NDArray[np.float32]:
        k = np.arange(index, index + frames, dtype=np.float64)
        # (k * f) mod sr is exact for integer f, so the phase is exact at any index.
        phase = np.mod(k * self.frequency_hz, self.sample_rate) * (2 * math.pi / self.sample_rate)
        y = self.amplitude * np.sin(phase)
        if self.noise:
            y += self.noise * self._rng.standard_normal(frames)
            np.clip(y, -1.0, 1.0, out=y)
        return np.repeat(y.astype(np.float32)[:, None], self.channels, axis=1)


class ClickSource(_PacedSource):
    """Clicks at every multiple of ``period_s`` of TRUE time: one event all devices hear.

    A simulated room: each click happens at one instant of real time, so devices whose
    clocks are offset or drift record it at different instants of their own clocks. Tests
    and benchmarks check alignment on the audio with it.

    Parameters
    ----------
    period_s : float, default 0.25
        Seconds between clicks (true time).
    click_s : float, default 0.002
        Length of each click (a 2 kHz burst).
    amplitude : float, default 0.8
        Peak amplitude of the clicks; silence between them.
    sample_rate, channels, block_s, clock
        As for `ToneSource`.
    """

    def __init__(self, period_s: float = 0.25, click_s: float = 0.002, amplitude: float = 0.8,
                 sample_rate: int = 48000, channels: int = 1, block_s: float = 0.02,
                 clock: DeviceClock | None = None) -> None:
        if not 0 < click_s < period_s:
            raise ValueError(f"need 0 < click_s < period_s, not {click_s} and {period_s}")
        super().__init__(name=f"click:{period_s:g}", sample_rate=sample_rate,
                         channels=channels, block_s=block_s, clock=clock)
        self.period_s = float(period_s)
        self.click_s = float(click_s)
        self.amplitude = float(amplitude)

    def _make(self, index: int, frames: int) -> npt.NDArray[np.float32]:
        t_first = self._t_open + index / self.sample_rate
        true_first = self.clock.true_time(t_first)
        # True time advances 1/rate per second of device time (the clock's drift).
        k = np.arange(frames, dtype=np.float64)
        true = true_first + k / (self.sample_rate * self.clock.rate)
        since = np.mod(true, self.period_s)
        y = np.where(since < self.click_s,
                     self.amplitude * np.sin(2 * math.pi * 2000.0 * since), 0.0)
        return np.repeat(y.astype(np.float32)[:, None], self.channels, axis=1)


class SilenceSource(_PacedSource):
    """Digital silence, paced like any other source.

    Parameters
    ----------
    sample_rate : int, default 48000
        Frames per second.
    channels : int, default 1
        Channel count.
    block_s : float, default 0.02
        Block duration in seconds.
    clock : DeviceClock, optional
        Device clock; a fresh default clock if omitted.
    """

    def __init__(self, sample_rate: int = 48000, channels: int = 1, block_s: float = 0.02,
                 clock: DeviceClock | None = None) -> None:
        super().__init__(name="silence", sample_rate=sample_rate, channels=channels,
                         block_s=block_s, clock=clock)

    def _make(self, index: int, frames: int) -> npt.NDArray[np.float32]:
        return np.zeros((frames, self.channels), dtype=np.float32)


class FileSource(_PacedSource):
    """A WAV or FLAC file, played as if it were being captured live.

    The file is read one block at a time (a 20 ms read is small enough for the event loop),
    never whole. Its own sample rate and channel count are the source's.

    Parameters
    ----------
    path : str or Path
        Any file libsndfile reads (WAV, FLAC, OGG...).
    loop : bool, default True
        Start over at the end, seamlessly (a block may span the end and the start). If
        False, the last block may be short and the next `read` raises `EOFError`.
    block_s : float, default 0.02
        Block duration in seconds.
    clock : DeviceClock, optional
        Device clock; a fresh default clock if omitted.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file holds no audio frames.
    """

    def __init__(self, path: str | Path, loop: bool = True, block_s: float = 0.02,
                 clock: DeviceClock | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no audio file at {self.path}")
        info = sf.info(str(self.path))
        if info.frames <= 0:
            raise ValueError(f"{self.path} holds no audio frames")
        super().__init__(name=f"file:{self.path.name}", sample_rate=info.samplerate,
                         channels=info.channels, block_s=block_s, clock=clock)
        self.loop = loop
        self.frames = int(info.frames)
        self._file: sf.SoundFile | None = None

    def _open_hook(self) -> None:
        self._file = sf.SoundFile(str(self.path))

    def _close_hook(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _next_frames(self) -> int:
        if self.loop or self._file is None:
            return self.block_frames
        return min(self.block_frames, self.frames - int(self._file.tell()))

    def _make(self, index: int, frames: int) -> npt.NDArray[np.float32]:
        assert self._file is not None
        parts: list[npt.NDArray[np.float32]] = []
        got = 0
        while got < frames:
            part = self._file.read(frames - got, dtype="float32", always_2d=True)
            if len(part) == 0:
                self._file.seek(0)  # only reached when looping: _next_frames caps the rest
                continue
            parts.append(part)
            got += len(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class MicrophoneSource(Source):
    """A sound card input, through sounddevice (PortAudio).

    PortAudio's callback thread hands each block to the event loop with
    ``loop.call_soon_threadsafe``; `read` awaits the next one. Block ``t0`` s come from the
    frame count (so they advance exactly), anchored on the device clock when the first
    block arrived, minus its duration.

    Parameters
    ----------
    device : int or str, optional
        PortAudio input device index or name substring; the default input if omitted.
    sample_rate : int, default 48000
        Frames per second.
    channels : int, default 1
        Channel count.
    block_s : float, default 0.02
        Block duration in seconds.
    clock : DeviceClock, optional
        Device clock; a fresh default clock if omitted.
    """

    def __init__(self, device: int | str | None = None, sample_rate: int = 48000,
                 channels: int = 1, block_s: float = 0.02,
                 clock: DeviceClock | None = None) -> None:
        self.device = device
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_s = float(block_s)
        self.clock = clock if clock is not None else DeviceClock()
        self.name = "mic" if device is None else f"mic:{device}"
        self.overflows = 0
        self._stream: Any = None
        self._queue: asyncio.Queue[tuple[npt.NDArray[np.float32], float] | None] | None = None
        self._t_first: float | None = None
        self._index = 0

    async def open(self) -> None:
        """Open and start the input stream.

        Raises
        ------
        NoMicrophone
            sounddevice or PortAudio is missing, or there is no such input device.
        """
        if self._stream is not None:
            return
        try:
            # Imported here: optional, and loading PortAudio has a cost nobody else should pay.
            sd = importlib.import_module("sounddevice")
        except ImportError as exc:
            raise NoMicrophone(
                "sounddevice is not installed: install the 'mic' extra "
                "(pip install 'vocalink-lab[mic]') and the Debian package libportaudio2"
            ) from exc
        except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
            raise NoMicrophone(f"PortAudio could not be loaded ({exc}): install the "
                               "Debian package libportaudio2") from exc
        try:
            sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            which = "no default input device" if self.device is None else \
                f"no input device {self.device!r}"
            raise NoMicrophone(f"{which}: {exc}") from exc
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[npt.NDArray[np.float32], float] | None] = asyncio.Queue()

        def deliver(data: npt.NDArray[np.float32], mono: float, overflow: bool) -> None:
            if overflow:
                self.overflows += 1
                log.warning("%s: input overflow, the sound card dropped frames", self.name)
            queue.put_nowait((data, mono))

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            mono = time.monotonic()
            with contextlib.suppress(RuntimeError):  # the loop closed under us at shutdown
                loop.call_soon_threadsafe(deliver, indata.copy(), mono,
                                          bool(getattr(status, "input_overflow", False)))

        def start() -> Any:
            stream = sd.InputStream(samplerate=self.sample_rate, channels=self.channels,
                                    dtype="float32", blocksize=self.block_frames,
                                    device=self.device, callback=callback)
            stream.start()
            return stream

        try:
            # Opening an ALSA device can take a good fraction of a second: not on the loop.
            stream = await asyncio.to_thread(start)
        except sd.PortAudioError as exc:
            raise NoMicrophone(f"cannot open {self.name} at {self.sample_rate} Hz x"
                               f"{self.channels}: {exc}") from exc
        self._queue, self._stream = queue, stream
        self._t_first, self._index = None, 0

    async def close(self) -> None:
        """Stop and close the stream; a pending `read` raises `EOFError`."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        # stop() waits for the callback in flight: a few ms, but not ours to spend on the loop.
        await asyncio.to_thread(stream.close)
        if self._queue is not None:
            self._queue.put_nowait(None)

    async def read(self) -> Block:
        """Wait for the next block from the sound card.

        Returns
        -------
        Block
            The next block; ``t0`` advances by exactly ``frames / sample_rate``.

        Raises
        ------
        EOFError
            The stream was closed.
        """
        if self._queue is None:
            raise RuntimeError(f"{self!r} is not open")
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # keep later reads failing the same way
            raise EOFError(f"{self.name} was closed")
        data, mono = item
        if self._t_first is None:
            self._t_first = self.clock.from_monotonic(mono) - len(data) / self.sample_rate
        block = Block(samples=data, t0=self._t_first + self._index / self.sample_rate,
                      index=self._index)
        self._index += len(data)
        return block


def make_source(spec: str, *, sample_rate: int = 48000, channels: int = 1,
                clock: DeviceClock | None = None, block_s: float = 0.02) -> Source:
    """Build a source from a short text spec (a CLI argument, a command parameter).

    Parameters
    ----------
    spec : str
        One of ``"tone"``, ``"tone:440"``, ``"tone:440:0.5"`` (frequency in Hz, amplitude),
        ``"noise"``, ``"noise:0.1"`` (white noise level), ``"silence"``,
        ``"file:/path/x.wav"``, ``"mic"``, ``"mic:2"`` (device index) or ``"mic:USB"``
        (device name substring).
    sample_rate : int, default 48000
        Frames per second (a file keeps its own).
    channels : int, default 1
        Channel count (a file keeps its own).
    clock : DeviceClock, optional
        Device clock shared by the source's blocks.
    block_s : float, default 0.02
        Block duration in seconds.

    Returns
    -------
    Source
        Not yet opened.

    Raises
    ------
    ValueError
        The spec is malformed, or a value is out of range.
    FileNotFoundError
        A ``file:`` spec names no file.

    Examples
    --------
    >>> make_source("tone:1000:0.5", sample_rate=16000, channels=2)
    <ToneSource 'tone:1000:0.5' 16000 Hz x2>
    """
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if sep and not rest:
        raise ValueError(f"bad source spec {spec!r}: nothing after the colon")
    common: dict[str, Any] = dict(sample_rate=sample_rate, channels=channels, block_s=block_s,
                                  clock=clock)
    try:
        if kind == "tone":
            fields = [float(a) for a in rest.split(":")] if rest else []
            if len(fields) > 2:
                raise ValueError("too many fields")
            tone: dict[str, Any] = dict(zip(("frequency_hz", "amplitude"), fields, strict=False))
            return ToneSource(**tone, **common)
        if kind == "noise":
            level = float(rest) if rest else 0.1
            return ToneSource(amplitude=0.0, noise=level, **common)
        if kind == "click":
            return ClickSource(float(rest) if rest else 0.25, **common)
        if kind == "silence" and not rest:
            return SilenceSource(**common)
        if kind == "file" and rest:
            return FileSource(rest, block_s=block_s, clock=clock)
        if kind == "mic":
            device: int | str | None = None
            if rest:
                device = int(rest) if rest.isdigit() else rest
            return MicrophoneSource(device, **common)
    except ValueError as exc:
        raise ValueError(f"bad source spec {spec!r}: {exc}") from exc
    raise ValueError(f"bad source spec {spec!r}: expected one of {_SPECS}")


def levels(samples: npt.ArrayLike) -> tuple[float, float]:
    """RMS and peak level of some audio, in dBFS.

    Parameters
    ----------
    samples : array_like, shape=(frames,) or (frames, channels)
        Audio in [-1, 1]: one block or several concatenated. All channels count together.

    Returns
    -------
    rms_dbfs, peak_dbfs : float
        ``20 log10`` of the RMS and of the largest absolute value, floored at -120.0 (also
        for empty input). Non-finite samples are ignored, so the result is never NaN.

    Examples
    --------
    >>> import numpy as np
    >>> rms, peak = levels(np.sin(2 * np.pi * np.arange(480) / 48))
    >>> round(rms, 2), round(peak, 2)
    (-3.01, 0.0)
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return FLOOR_DBFS, FLOOR_DBFS
    rms = math.sqrt(float(np.mean(np.square(x))))
    peak = float(np.max(np.abs(x)))
    return _dbfs(rms), _dbfs(peak)


def _dbfs(value: float) -> float:
    floor = 10 ** (FLOOR_DBFS / 20)
    return FLOOR_DBFS if value <= floor else 20 * math.log10(value)
