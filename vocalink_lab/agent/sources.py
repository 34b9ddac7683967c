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

A paced source can also simulate a sound card whose crystal runs ``audio_drift_ppm`` away
from the device's CPU clock (frame ``i`` is captured at device time
``t_open + i / (sample_rate * (1 + audio_drift_ppm * 1e-6))``), delivering its blocks late
by a random ``jitter_s`` like callbacks, and stamping them with ADC timestamps (or none,
like some host APIs). Its block times then come from the same fitted `CaptureClock` as a
microphone's, and `ClickSource` makes its clicks at the true time of each sample under
that clock: the audio stays the ground truth. In a spec, ``click:0.25:audio_ppm=80``
(also ``jitter_us=300``, ``adc=0``) sets them.
"""

from __future__ import annotations

import abc
import asyncio
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf

from ..levels import FLOOR_DBFS, amplitude_dbfs
from .audioclock import MAX_PPM, CaptureClock
from .blocks import Block, Source
from .clicktrack import CLICK_HZ
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
          '"file:PATH", "mic[:DEVICE]"; the synthetic ones may end with ":audio_ppm=PPM", '
          '":jitter_us=US", ":adc=0"')
#: Simulated-card options of a synthetic spec (``name=value`` fields), and their keywords.
_CARD_OPTIONS = {"audio_ppm": "audio_drift_ppm", "jitter_us": "jitter_s", "adc": "adc_timestamps"}


class _PacedSource(Source):
    """A source that makes its blocks on demand, released at their due time.

    With ``audio_drift_ppm``, ``jitter_s`` or without ``adc_timestamps``, it simulates a
    sound card (see the module's docstring): ``audio_drift_ppm`` is the card's rate error
    against the device clock, ``jitter_s`` the mean of the (exponential, delay-only) lateness
    of each simulated callback, ``adc_timestamps=False`` a host API that reports 0 for
    them. Its block times then come from `capture`.
    """

    def __init__(self, *, name: str, sample_rate: int, channels: int, block_s: float,
                 clock: DeviceClock | None, audio_drift_ppm: float = 0.0,
                 jitter_s: float = 0.0, adc_timestamps: bool = True) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, not "
                             f"{sample_rate} and {channels}")
        if not block_s > 0:
            raise ValueError(f"block_s must be positive, not {block_s}")
        if not abs(audio_drift_ppm) <= MAX_PPM / 2:  # the fit clamps at MAX_PPM
            raise ValueError(f"audio_drift_ppm must be within ±{MAX_PPM / 2:g}, not "
                             f"{audio_drift_ppm}")
        if not 0 <= jitter_s < 1:
            raise ValueError(f"jitter_s must be in [0, 1), not {jitter_s}")
        self.name = name
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_s = float(block_s)
        self.clock = clock if clock is not None else DeviceClock()
        self.audio_drift_ppm = float(audio_drift_ppm)
        self.jitter_s = float(jitter_s)
        self.adc_timestamps = bool(adc_timestamps)
        #: Whether it simulates a card (else frames are exactly 1 / sample_rate apart).
        self.simulates_card = bool(audio_drift_ppm or jitter_s or not adc_timestamps)
        #: Frames per device-clock second, the simulated card's real rate.
        self.card_rate = self.sample_rate * (1 + self.audio_drift_ppm * 1e-6)
        self._open = False
        self._t_open = 0.0
        self._index = 0
        self._lock = asyncio.Lock()
        self._jitter_rng = random.Random()

    async def open(self) -> None:
        if self._open:
            return
        self._open_hook()
        self._t_open = self.clock.now()
        self._index = 0
        if self.simulates_card:
            # Monotonic frames per second: the device clock's own drift included.
            self.capture = CaptureClock(self.sample_rate * self.clock.rate)
        self._open = True

    def capture_time(self, index: float) -> float:
        """Device-clock time at which frame ``index`` is (simulated to be) captured.

        The ground truth of the simulated card, which its block times only estimate.

        Parameters
        ----------
        index : float
            Frame index since `open`.

        Returns
        -------
        float
            ``t_open + index / card_rate``.
        """
        return self._t_open + index / self.card_rate

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
            index = self._index
            await self.clock.sleep_until(self.capture_time(index + n))
            # No await from here on: a read cancelled in its sleep has consumed nothing.
            samples = self._make(index, n)
            if self.capture is None:
                t0 = self._t_open + index / self.sample_rate
            else:
                t0 = self.clock.from_monotonic(self._stamp(index, n))
            block = Block(samples=samples, t0=t0, index=index)
            self._index += n
            return block

    def _stamp(self, index: int, n: int) -> float:
        """Time a block as a sound card would; its start's monotonic time from `capture`."""
        assert self.capture is not None
        end = self.clock.to_monotonic(self.capture_time(index + n))
        # Simulated callback: late by a random delay, never early. Not the loop's actual
        # wake-up: a reader that falls behind would make a sound card's callbacks no later.
        arrival = end + (self._jitter_rng.expovariate(1 / self.jitter_s) if self.jitter_s else 0.0)
        adc = current = None
        if self.adc_timestamps:
            # The stream clock is the monotonic clock here.
            adc = self.clock.to_monotonic(self.capture_time(index))
            current = arrival
        self.capture.observe(index, n, arrival=arrival, adc=adc, current=current)
        return self.capture.block_time(index, n)

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
    audio_drift_ppm : float, default 0.0
        Simulated sound card: its rate error against the device clock (see the module).
    jitter_s : float, default 0.0
        Simulated sound card: mean lateness of its callbacks (delay only).
    adc_timestamps : bool, default True
        Simulated sound card: whether it stamps blocks with ADC times (else 0, like some
        host APIs, and block times come from the callbacks).

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
        *,
        audio_drift_ppm: float = 0.0,
        jitter_s: float = 0.0,
        adc_timestamps: bool = True,
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
                         block_s=block_s, clock=clock, audio_drift_ppm=audio_drift_ppm,
                         jitter_s=jitter_s, adc_timestamps=adc_timestamps)
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
    audio_drift_ppm, jitter_s, adc_timestamps
        As for `ToneSource`: a simulated sound card. The clicks stay at true multiples of
        ``period_s``, the samples being captured at the card's (drifting) instants.
    """

    def __init__(self, period_s: float = 0.25, click_s: float = 0.002, amplitude: float = 0.8,
                 sample_rate: int = 48000, channels: int = 1, block_s: float = 0.02,
                 clock: DeviceClock | None = None, *, audio_drift_ppm: float = 0.0,
                 jitter_s: float = 0.0, adc_timestamps: bool = True) -> None:
        if not 0 < click_s < period_s:
            raise ValueError(f"need 0 < click_s < period_s, not {click_s} and {period_s}")
        super().__init__(name=f"click:{period_s:g}", sample_rate=sample_rate,
                         channels=channels, block_s=block_s, clock=clock,
                         audio_drift_ppm=audio_drift_ppm, jitter_s=jitter_s,
                         adc_timestamps=adc_timestamps)
        self.period_s = float(period_s)
        self.click_s = float(click_s)
        self.amplitude = float(amplitude)

    def _make(self, index: int, frames: int) -> npt.NDArray[np.float32]:
        # The true time of each sample under the card's clock (its drift against the device
        # clock, then the device clock's against true time), not its estimate: ground truth.
        true_first = self.clock.true_time(self.capture_time(index))
        k = np.arange(frames, dtype=np.float64)
        true = true_first + k / (self.card_rate * self.clock.rate)
        since = np.mod(true, self.period_s)
        y = np.where(since < self.click_s,
                     self.amplitude * np.sin(2 * math.pi * CLICK_HZ * since), 0.0)
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
    audio_drift_ppm, jitter_s, adc_timestamps
        A simulated sound card, as for `ToneSource`.
    """

    def __init__(self, sample_rate: int = 48000, channels: int = 1, block_s: float = 0.02,
                 clock: DeviceClock | None = None, *, audio_drift_ppm: float = 0.0,
                 jitter_s: float = 0.0, adc_timestamps: bool = True) -> None:
        super().__init__(name="silence", sample_rate=sample_rate, channels=channels,
                         block_s=block_s, clock=clock, audio_drift_ppm=audio_drift_ppm,
                         jitter_s=jitter_s, adc_timestamps=adc_timestamps)

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
    audio_drift_ppm, jitter_s, adc_timestamps
        A simulated sound card, as for `ToneSource`.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file holds no audio frames.
    """

    def __init__(self, path: str | Path, loop: bool = True, block_s: float = 0.02,
                 clock: DeviceClock | None = None, *, audio_drift_ppm: float = 0.0,
                 jitter_s: float = 0.0, adc_timestamps: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no audio file at {self.path}")
        info = sf.info(str(self.path))
        if info.frames <= 0:
            raise ValueError(f"{self.path} holds no audio frames")
        super().__init__(name=f"file:{self.path.name}", sample_rate=info.samplerate,
                         channels=info.channels, block_s=block_s, clock=clock,
                         audio_drift_ppm=audio_drift_ppm, jitter_s=jitter_s,
                         adc_timestamps=adc_timestamps)
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
        ``"noise"``, ``"noise:0.1"`` (white noise level), ``"silence"``, ``"click"``,
        ``"click:0.25"`` (period in s), ``"file:/path/x.wav"``, ``"mic"``, ``"mic:2"``
        (device index) or ``"mic:USB"`` (device name substring). A tone, noise, silence
        or click spec may end with simulated sound card options: ``:audio_ppm=80`` (its
        rate error against the device clock), ``:jitter_us=300`` (mean callback lateness),
        ``:adc=0`` (no ADC timestamps), as in ``"click:0.25:audio_ppm=80"``.
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
        if kind in ("tone", "noise", "click", "silence"):
            rest, card = _card_options(rest)
            common.update(card)
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


def _card_options(rest: str) -> tuple[str, dict[str, Any]]:
    """Split the ``name=value`` fields of a simulated card off a synthetic spec's fields."""
    plain: list[str] = []
    card: dict[str, Any] = {}
    for field in rest.split(":") if rest else []:
        name, eq, value = field.partition("=")
        if not eq:
            plain.append(field)
            continue
        if name not in _CARD_OPTIONS or _CARD_OPTIONS[name] in card:
            raise ValueError(f"unknown or repeated option {name!r} (expected "
                             f"{', '.join(_CARD_OPTIONS)})")
        number = float(value)
        if name == "jitter_us":
            number *= 1e-6
        card[_CARD_OPTIONS[name]] = bool(number) if name == "adc" else number
    return ":".join(plain), card


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
