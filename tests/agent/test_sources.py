"""Sources: right signal, contiguous blocks paced in real time, files reproduced exactly."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.audio import tone
from vocalink_lab.agent.clock import DeviceClock
from vocalink_lab.agent.sources import (
    Block,
    ClickSource,
    FileSource,
    MicrophoneSource,
    NoMicrophone,
    SilenceSource,
    Source,
    ToneSource,
    levels,
    make_source,
)


def fast_clock(speed: float = 20.0) -> DeviceClock:
    """The only fake time here: a device clock running ``speed`` times fast paces blocks so."""
    return DeviceClock(drift_ppm=(speed - 1) * 1e6)


class WatchedClock(DeviceClock):
    """A device clock that notes how long each `sleep_until` had to wait (``<= 0``: not)."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)
        self.waits: list[float] = []
        self.sleeping = asyncio.Event()

    async def sleep_until(self, t: float) -> None:
        wait = self.to_monotonic(t) - time.monotonic()
        self.waits.append(wait)
        if wait > 0:
            self.sleeping.set()
        await super().sleep_until(t)


async def read_n(source: Source, n: int) -> list[Block]:
    async with source:
        return [await source.read() for _ in range(n)]


def joined(blocks: list[Block]) -> np.ndarray:
    return np.concatenate([b.samples for b in blocks])


@pytest.mark.asyncio
@pytest.mark.parametrize("sr", [16000, 48000])
@pytest.mark.parametrize("freq", [440.0, 1000.0, 3150.0])
async def test_tone_frequency(sr: int, freq: float) -> None:
    blocks = await read_n(ToneSource(freq, 0.5, sample_rate=sr, clock=fast_clock()), 50)  # 1 s
    x = joined(blocks)[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    peak_hz = np.argmax(spectrum) * sr / x.size
    assert peak_hz == pytest.approx(freq, abs=sr / x.size)
    assert np.max(np.abs(x)) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.asyncio
@pytest.mark.parametrize(("sr", "channels", "block_s"), [(48000, 1, 0.02), (16000, 2, 0.0137),
                                                         (44100, 3, 0.01)])
async def test_blocks_are_contiguous(sr: int, channels: int, block_s: float) -> None:
    source = ToneSource(sample_rate=sr, channels=channels, block_s=block_s, clock=fast_clock())
    blocks = await read_n(source, 30)
    n = round(block_s * sr)
    assert source.block_frames == n
    for k, block in enumerate(blocks):
        assert block.samples.shape == (n, channels)
        assert block.samples.dtype == np.float32
        assert block.index == k * n
        assert block.frames == n
        assert block.t0 - blocks[0].t0 == pytest.approx(k * n / sr, abs=1e-6)


@pytest.mark.asyncio
@pytest.mark.parametrize("block_s", [0.02, 0.0137])
async def test_phase_is_continuous_and_every_channel_equal(block_s: float) -> None:
    sr, freq, amp = 48000, 997.0, 0.3
    source = ToneSource(freq, amp, sample_rate=sr, channels=2, block_s=block_s,
                        clock=fast_clock())
    x = joined(await read_n(source, 40))
    k = np.arange(len(x))
    expected = amp * np.sin(2 * np.pi * freq * k / sr)
    np.testing.assert_allclose(x[:, 0], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(x[:, 0], x[:, 1])
    # No seam: the largest sample-to-sample step is the sine's own.
    assert np.max(np.abs(np.diff(x[:, 0]))) <= amp * 2 * np.pi * freq / sr + 1e-6


@pytest.mark.asyncio
async def test_pacing_is_real_time() -> None:
    clock = DeviceClock(offset_s=-7.0)
    source = ToneSource(sample_rate=8000, block_s=0.02, clock=clock)
    async with source:
        for _ in range(15):
            block = await source.read()
            # A block is released only once its last frame "has been captured".
            assert clock.now() >= block.t0 + block.frames / 8000 - 1e-3


@pytest.mark.asyncio
async def test_a_late_reader_gets_every_frame_at_once() -> None:
    clock = WatchedClock()
    source = ToneSource(sample_rate=8000, block_s=0.01, clock=clock)
    async with source:
        await asyncio.sleep(0.15)  # the reader is late: 15 blocks are due
        blocks = [await source.read() for _ in range(10)]
        assert all(w <= 0 for w in clock.waits), clock.waits  # none had to be waited for
        later = blocks[-1]
        for _ in range(1000):  # catching up, then back to real time:
            if clock.waits[-1] > 0:  # a block not due yet was waited for
                break
            later = await source.read()
        assert clock.waits[-1] > 0, clock.waits
    assert [b.index for b in blocks] == [80 * k for k in range(10)]
    assert later.index == 80 * (len(clock.waits) - 1)  # no frame skipped


@pytest.mark.asyncio
async def test_a_cancelled_read_consumes_nothing() -> None:
    clock = WatchedClock()
    source = ToneSource(sample_rate=8000, block_s=0.05, clock=clock)
    async with source:
        task = asyncio.ensure_future(source.read())
        await clock.sleeping.wait()  # the read waits for its block to be due
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        block = await source.read()
    assert block.index == 0


@pytest.mark.asyncio
async def test_noise_is_seeded_and_at_its_level() -> None:
    a = joined(await read_n(ToneSource(amplitude=0.0, noise=0.1, seed=3, clock=fast_clock()), 20))
    b = joined(await read_n(ToneSource(amplitude=0.0, noise=0.1, seed=3, clock=fast_clock()), 20))
    np.testing.assert_array_equal(a, b)
    assert levels(a)[0] == pytest.approx(-20.0, abs=0.3)


@pytest.mark.asyncio
async def test_silence() -> None:
    x = joined(await read_n(SilenceSource(channels=2, clock=fast_clock()), 5))
    assert x.shape == (5 * 960, 2) and not x.any()
    assert levels(x) == (-120.0, -120.0)


@pytest.mark.asyncio
async def test_read_before_open_fails() -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await ToneSource().read()


@pytest.fixture(params=["wav", "flac"])
def audio_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, np.ndarray]:
    """1234 frames of seeded stereo noise at 8 kHz, and the samples soundfile reads back."""
    rng = np.random.default_rng(7)
    data = rng.integers(-32768, 32768, size=(1234, 2), dtype=np.int16)
    path = tmp_path / f"noise.{request.param}"
    sf.write(path, data, 8000, subtype="PCM_16")
    expected, _ = sf.read(path, dtype="float32", always_2d=True)
    return path, expected


@pytest.mark.asyncio
async def test_file_source_loops_exactly(audio_file: tuple[Path, np.ndarray]) -> None:
    path, expected = audio_file
    source = FileSource(path, block_s=0.01, clock=fast_clock())  # 80-frame blocks
    assert (source.sample_rate, source.channels) == (8000, 2)
    blocks = await read_n(source, 40)
    x = joined(blocks)
    assert x.shape == (3200, 2)
    np.testing.assert_array_equal(x, np.concatenate([expected] * 3)[:3200])
    assert [b.index for b in blocks] == [80 * k for k in range(40)]


@pytest.mark.asyncio
async def test_file_source_without_loop_ends_with_eof(audio_file: tuple[Path, np.ndarray]
                                                      ) -> None:
    path, expected = audio_file
    source = FileSource(path, loop=False, block_s=0.01, clock=fast_clock())
    async with source:
        blocks = [block async for block in source]
        with pytest.raises(EOFError):
            await source.read()
    np.testing.assert_array_equal(joined(blocks), expected)
    assert blocks[-1].frames == 1234 % 80


@pytest.mark.asyncio
async def test_file_shorter_than_a_block_loops(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    sf.write(path, np.array([0.5, -0.5, 0.25], dtype=np.float32), 8000, subtype="FLOAT")
    x = joined(await read_n(FileSource(path, block_s=0.001, clock=fast_clock()), 2))
    np.testing.assert_array_equal(x[:, 0], [0.5, -0.5, 0.25] * 5 + [0.5])


def test_file_source_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        FileSource(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros((0, 1), dtype=np.float32), 8000)
    with pytest.raises(ValueError, match="no audio"):
        FileSource(empty)


@pytest.mark.asyncio
async def test_microphone_without_sounddevice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # makes `import sounddevice` fail
    mic = MicrophoneSource()
    with pytest.raises(NoMicrophone, match="libportaudio2") as info:
        await mic.open()
    assert isinstance(info.value, RuntimeError)
    assert "'mic' extra" in str(info.value)
    with pytest.raises(RuntimeError, match="not open"):
        await mic.read()
    await mic.close()  # nothing to close, no error


@pytest.mark.parametrize(("spec", "kind", "attrs"), [
    ("tone", ToneSource, {"frequency_hz": 440.0, "amplitude": 0.3}),
    ("tone:1000", ToneSource, {"frequency_hz": 1000.0, "amplitude": 0.3}),
    ("tone:440:0.5", ToneSource, {"frequency_hz": 440.0, "amplitude": 0.5}),
    ("noise:0.1", ToneSource, {"amplitude": 0.0, "noise": 0.1}),
    ("silence", SilenceSource, {}),
    ("mic", MicrophoneSource, {"device": None}),
    ("mic:2", MicrophoneSource, {"device": 2}),
    ("mic:USB Audio", MicrophoneSource, {"device": "USB Audio"}),
])
def test_make_source(spec: str, kind: type, attrs: dict[str, object]) -> None:
    clock = DeviceClock()
    source = make_source(spec, sample_rate=16000, channels=2, clock=clock)
    assert type(source) is kind
    assert (source.sample_rate, source.channels, source.clock) == (16000, 2, clock)
    for name, value in attrs.items():
        assert getattr(source, name) == value


@pytest.mark.parametrize(("spec", "kind", "attrs"), [
    ("click:0.25", ClickSource, {"period_s": 0.25, "audio_drift_ppm": 0.0,
                                 "simulates_card": False}),
    ("click:0.25:audio_ppm=80", ClickSource, {"period_s": 0.25, "audio_drift_ppm": 80.0,
                                              "jitter_s": 0.0, "adc_timestamps": True}),
    ("click:audio_ppm=-40:jitter_us=250:adc=0", ClickSource,
     {"period_s": 0.25, "audio_drift_ppm": -40.0, "jitter_s": 250e-6,
      "adc_timestamps": False, "simulates_card": True}),
    ("tone:1000:0.5:audio_ppm=20", ToneSource, {"frequency_hz": 1000.0, "amplitude": 0.5,
                                                "audio_drift_ppm": 20.0}),
    ("silence:adc=0", SilenceSource, {"adc_timestamps": False, "simulates_card": True}),
])
def test_make_source_with_a_simulated_card(spec: str, kind: type,
                                           attrs: dict[str, object]) -> None:
    source = make_source(spec, sample_rate=16000, channels=1, clock=None)
    assert type(source) is kind
    for name, value in attrs.items():
        assert getattr(source, name) == pytest.approx(value)


@pytest.mark.parametrize("spec", ["click:0.25:audio_ppm=x", "click:0.25:drift=3",
                                  "tone:440:audio_ppm=1:audio_ppm=2", "click:audio_ppm=5000",
                                  "silence:3:adc=0"])
def test_bad_simulated_card_options(spec: str) -> None:
    with pytest.raises(ValueError, match="bad source spec"):
        make_source(spec, sample_rate=48000, channels=1, clock=None)


@pytest.mark.asyncio
async def test_a_simulated_card_paces_blocks_on_its_own_clock() -> None:
    # 400 ppm slow against a device clock that runs twenty times fast (only pacing is).
    source = ToneSource(sample_rate=16000, clock=fast_clock(), audio_drift_ppm=-400)
    blocks = await read_n(source, 100)
    assert source.capture is not None and source.capture.source == "adc"
    # Timed by the fitted card clock: within a fifth of a frame while its first blocks only
    # begin to show the drift (the twenty-fold clock magnifies that), then far closer.
    errors = [abs(b.t0 - source.capture_time(b.index)) * 16000 for b in blocks]
    assert max(errors) < 0.25 and max(errors[40:]) < 0.05
    report = source.audio_clock_report()
    assert report is not None and report["ppm"] == pytest.approx(-400, abs=0.5)


def test_make_source_file(tmp_path: Path) -> None:
    path = tmp_path / "a:b.wav"  # a colon in the path is fine
    sf.write(path, np.zeros(100, dtype=np.float32), 22050)
    source = make_source(f"file:{path}", sample_rate=48000, channels=2, clock=None)
    assert isinstance(source, FileSource)
    assert (source.sample_rate, source.channels) == (22050, 1)  # the file's own


@pytest.mark.parametrize("spec", ["", "tone:abc", "tone:440:0.5:1", "tone:30000", "tone:440:2",
                                  "noise:-1", "file:", "silence:3", "guitar", "mic:"])
def test_bad_spec(spec: str) -> None:
    with pytest.raises(ValueError, match="bad source spec"):
        make_source(spec, sample_rate=48000, channels=1, clock=None)


def test_levels() -> None:
    sine = tone(1.0, 48000, freq=1000.0, amplitude=1.0, noise=0.0)[:, 0]  # full scale
    rms, peak = levels(sine)
    assert rms == pytest.approx(-3.0103, abs=0.01)
    assert peak == pytest.approx(0.0, abs=1e-6)
    rms, peak = levels(np.stack([0.5 * sine, 0.5 * sine], axis=1).astype(np.float32))
    assert rms == pytest.approx(-3.0103 - 6.0206, abs=0.01)
    assert peak == pytest.approx(-6.0206, abs=1e-3)
    assert levels(np.zeros((960, 2), dtype=np.float32)) == (-120.0, -120.0)
    assert levels(np.zeros((0, 1))) == (-120.0, -120.0)
    assert levels(np.full(10, 1e-9)) == (-120.0, -120.0)
    rms, peak = levels(np.array([np.nan, 0.5, -np.inf]))
    assert not math.isnan(rms) and peak == pytest.approx(-6.0206, abs=1e-3)
