"""What every audio source of the agent is: the `Block` s it hands out, the `Source` interface.

Its own module so that the sources (synthetic and file ones in `sources`, the sound card in
`microphone`) and the recorder can all depend on it without depending on each other.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from .audioclock import CaptureClock
from .clock import DeviceClock

__all__ = ["Block", "Source"]


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
    capture : CaptureClock or None
        The fitted clock of the source's frames (monotonic time of each frame index), for
        a source that times its frames like a sound card; ``None`` for one whose frames
        are exactly ``1 / sample_rate`` apart on the device clock.
    """

    sample_rate: int
    channels: int
    name: str
    block_s: float
    clock: DeviceClock
    capture: CaptureClock | None = None

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

    def frame_time(self, index: float) -> float | None:
        """Device-clock time of frame ``index``: the audio clock's best current estimate.

        Block ``t0`` s follow the same fit, but smoothly, so they may lag a refinement of it;
        a take's first frame and its STOP instant are placed with this instead.

        Parameters
        ----------
        index : float
            A frame index (fractional allowed), past or future.

        Returns
        -------
        float or None
            ``None`` without an audio clock (or before the first block): then frames are
            ``1 / sample_rate`` apart from a block's ``t0``.
        """
        capture = self.capture
        if capture is None or not capture.ready:
            return None
        return self.clock.from_monotonic(capture.time_of(index))

    def frame_at(self, t: float) -> float | None:
        """Fractional frame index at device-clock time ``t``, the inverse of `frame_time`.

        Parameters
        ----------
        t : float
            A device-clock time.

        Returns
        -------
        float or None
            ``None`` without an audio clock (or before the first block).
        """
        capture = self.capture
        if capture is None or not capture.ready:
            return None
        return capture.index_at(self.clock.to_monotonic(t))

    def audio_clock_report(self) -> dict[str, Any] | None:
        """The fitted audio clock so far, as a recording stores it (``audio_clock``).

        Returns
        -------
        dict or None
            See `CaptureClock.report`; ``None`` without an audio clock.
        """
        capture = self.capture
        if capture is None:
            return None
        return capture.report(device_rate=self.clock.rate, sample_rate=self.sample_rate)

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
