"""The microphone: a sound card input, through sounddevice (PortAudio), optional.

sounddevice is imported only when a microphone is opened, so that the agent installs and
runs without it (the ``mic`` extra); `NoMicrophone` says what is missing.

Block times come from the card's own clock, fitted over the take (`CaptureClock`): from
PortAudio's ADC timestamps where the host API gives sane ones, else from when the callbacks
arrived. Counting frames at the nominal rate instead would drift with the card's crystal
(50 ppm: 1 ms after 20 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .audioclock import CaptureClock
from .blocks import Block, Source
from .clock import DeviceClock

__all__ = ["MicrophoneSource", "NoMicrophone"]

log = logging.getLogger(__name__)


class NoMicrophone(RuntimeError):
    """No microphone can be opened: sounddevice or PortAudio is missing, or no input exists."""


class MicrophoneSource(Source):
    """A sound card input, through sounddevice (PortAudio).

    PortAudio's callback thread hands each block to the event loop with
    ``loop.call_soon_threadsafe``, with the monotonic time it arrived and its
    ``time_info`` (``inputBufferAdcTime``, ``currentTime``); `read` awaits the next one.
    Block ``t0`` s are the device-clock times of the `capture` fit (the card's real rate,
    measured over the take), smoothly updated: each block starts within a tenth of a
    frame of where the previous one ended.

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
    monotonic : callable, optional
        The monotonic clock read in the callback, ``time.monotonic`` by default (a test
        replaying a fake stream faster than real time passes its own).
    """

    def __init__(self, device: int | str | None = None, sample_rate: int = 48000,
                 channels: int = 1, block_s: float = 0.02,
                 clock: DeviceClock | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.device = device
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.block_s = float(block_s)
        self.clock = clock if clock is not None else DeviceClock()
        self.name = "mic" if device is None else f"mic:{device}"
        self.overflows = 0
        self._monotonic = monotonic
        self._stream: Any = None
        self._queue: asyncio.Queue[_Delivery | None] | None = None
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
        queue: asyncio.Queue[_Delivery | None] = asyncio.Queue()
        monotonic = self._monotonic

        def deliver(item: _Delivery, overflow: bool) -> None:
            if overflow:
                self.overflows += 1
                log.warning("%s: input overflow, the sound card dropped frames", self.name)
            queue.put_nowait(item)

        def callback(indata: Any, frames: int, time_info: Any, status: Any) -> None:
            # First thing: the arrival time is what the fall-back fit and the mapping of
            # the ADC timestamps onto the monotonic clock are made of.
            mono = monotonic()
            item = (indata.copy(), mono, _stream_time(time_info, "inputBufferAdcTime"),
                    _stream_time(time_info, "currentTime"))
            with contextlib.suppress(RuntimeError):  # the loop closed under us at shutdown
                loop.call_soon_threadsafe(deliver, item,
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
        self._index = 0
        self.capture = CaptureClock(self.sample_rate)

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
            The next block; ``t0`` on the fitted audio clock (see the class).

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
        data, arrival, adc, current = item
        capture = self.capture
        assert capture is not None
        index, frames = self._index, len(data)
        capture.observe(index, frames, arrival=arrival, adc=adc, current=current)
        block = Block(samples=data, t0=self.clock.from_monotonic(capture.block_time(index, frames)),
                      index=index)
        self._index += frames
        return block


#: What the callback hands to the loop: samples, arrival (monotonic), ADC and current time
#: (stream clock; ``None`` when missing).
_Delivery = tuple[npt.NDArray[np.float32], float, float | None, float | None]


def _stream_time(time_info: Any, name: str) -> float | None:
    """A field of PortAudio's callback ``time_info``, ``None`` if absent or not a number."""
    try:
        value = float(getattr(time_info, name))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
