"""Where a device's audio comes from: synthetic signals, a file played as if live, a microphone.

`make_source` builds any of them from a short spec. The `Source` interface and its `Block` s
are in `blocks`, the microphone in `microphone`; all are importable from here too.

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
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ..levels import FLOOR_DBFS, amplitude_dbfs
from .blocks import Block, Source
from .clock import DeviceClock
from .microphone import MicrophoneSource, NoMicrophone

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

_SPECS = ('"tone[:FREQ[:AMPLITUDE]]", "noise[:LEVEL]", "silence", "click[:PERIOD]", '
          '"file:PATH", "mic[:DEVICE]"')


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
    return amplitude_dbfs(rms), amplitude_dbfs(peak)
