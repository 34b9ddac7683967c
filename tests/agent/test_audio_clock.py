"""The two-level clock: frame times from the sound card's own clock, fitted over the take.

A card's crystal runs some tens of ppm off the CPU's, so counting frames at the nominal
rate drifts by milliseconds over a take. Checked here on the fit alone (known lines, with
delay-only jitter and with broken ADC timestamps), on `MicrophoneSource` driven by a fake
``sounddevice`` module (only the hardware and the time are fake: a thread calls the real
callback with PortAudio-like ``time_info``, faster than real time), and on a scheduled
take of a simulated card whose clock drifts, judged on the clicks in its audio.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import random
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from tests.support.wait import wait_until
from vocalink_lab.agent.audioclock import AudioClock, CaptureClock
from vocalink_lab.agent.clock import DeviceClock
from vocalink_lab.agent.microphone import MicrophoneSource
from vocalink_lab.agent.outbox import Outbox
from vocalink_lab.agent.recorder import Recorder
from vocalink_lab.agent.sources import ClickSource
from vocalink_lab.agent.spool import FinishedRecording
from vocalink_lab.agent.uploader import Uploader
from vocalink_lab.protocol import Action, Command

RATE = 48000
FRAMES = 960  # 20 ms blocks


def card_times(ppm: float, start: float, blocks: int) -> np.ndarray:
    """Monotonic capture time of each block's first frame, for a card ``ppm`` fast."""
    return start + np.arange(blocks) * FRAMES / (RATE * (1 + ppm * 1e-6))


# -- the fit ------------------------------------------------------------------------------


def test_the_envelope_recovers_rate_and_offset_under_delay_only_jitter() -> None:
    rng = np.random.default_rng(7)
    ppm, latency, blocks = 73.0, 0.004, 3000  # a minute of 20 ms callbacks
    starts = card_times(ppm, 5000.0, blocks + 1)
    arrivals = starts[1:] + latency + rng.exponential(0.001, blocks)  # late, never early
    envelope, squares = AudioClock(RATE, envelope=True, max_vertices=32), AudioClock(RATE)
    for k, arrival in enumerate(arrivals):
        envelope.add((k + 1) * FRAMES, arrival)
        squares.add((k + 1) * FRAMES, arrival)
    fit = envelope.fit()
    assert fit is not None and fit.points == blocks
    assert (fit.rate_hz / RATE - 1) * 1e6 == pytest.approx(ppm, abs=0.5)
    # Frame 0 at its capture time plus the constant latency: within 20 µs, at both ends.
    for k in (0, blocks):
        assert abs(envelope.time_of(k * FRAMES) - (starts[k] + latency)) < 20e-6
    assert fit.residual_s == pytest.approx(0.001, rel=0.1)  # the mean delay above it
    assert len(envelope._hx) <= 32  # bounded memory, however long the take
    # A least-squares line through the same arrivals is 1 ms late: the mean delay.
    assert squares.time_of(0) - (starts[0] + latency) > 0.0008
    assert envelope.index_at(envelope.time_of(123456.5)) == pytest.approx(123456.5)


def test_least_squares_recovers_a_card_from_noisy_timestamps() -> None:
    rng = np.random.default_rng(3)
    starts = card_times(-120.0, 10.0, 2000)
    clock = AudioClock(RATE)
    for k, t in enumerate(starts + rng.normal(0, 5e-6, starts.size)):
        clock.add(k * FRAMES, t)
    fit = clock.fit()
    assert fit is not None
    assert (fit.rate_hz / RATE - 1) * 1e6 == pytest.approx(-120.0, abs=0.2)
    assert abs(clock.time_of(1000 * FRAMES) - starts[1000]) < 2e-6
    assert fit.residual_s == pytest.approx(5e-6, rel=0.1)
    with pytest.raises(ValueError, match="increase"):
        clock.add(5, 11.0)
    with pytest.raises(LookupError):
        AudioClock(RATE).time_of(0)


@dataclass
class Stream:
    """A fake stream's blocks: arrival, ADC and current times (stream clock = monotonic)."""

    ppm: float = 90.0
    latency: float = 0.006
    seed: int = 1

    def blocks(self, n: int) -> list[tuple[int, float, float, float]]:
        rng = random.Random(self.seed)
        starts = card_times(self.ppm, 700.0, n + 1)
        out = []
        for k in range(n):
            arrival = float(starts[k + 1]) + self.latency + rng.expovariate(1 / 0.0005)
            out.append((k * FRAMES, arrival, float(starts[k]), arrival))
        return out


def feed(capture: CaptureClock, blocks: list[tuple[int, float, float | None, float | None]]
         ) -> list[float]:
    """Observe each block; the block start times handed out."""
    times = []
    for index, arrival, adc, current in blocks:
        capture.observe(index, FRAMES, arrival=arrival, adc=adc, current=current)
        times.append(capture.block_time(index, FRAMES))
    return times


def test_sane_adc_timestamps_are_used_and_a_rare_glitch_is_left_out() -> None:
    stream = Stream()
    blocks: list[tuple[int, float, float | None, float | None]] = list(stream.blocks(500))
    index, arrival, adc, current = stream.blocks(500)[200]
    blocks[200] = (index, arrival, adc - 0.003, current)  # one timestamp 3 ms off
    capture = CaptureClock(RATE)
    times = feed(capture, blocks)
    assert capture.source == "adc" and capture.rejected == 1
    truth = card_times(stream.ppm, 700.0, 500)
    assert max(abs(t - u) for t, u in zip(times, truth, strict=True)) < 2e-6
    report = capture.report()
    assert report is not None
    assert report["source"] == "adc" and report["points"] == 499
    assert report["ppm"] == pytest.approx(stream.ppm, abs=0.1)


@pytest.mark.parametrize(("name", "spoil", "reason"), [
    ("zero", lambda k, adc, cur: (0.0, cur), "zero"),
    ("missing", lambda k, adc, cur: (None, None), "no inputBufferAdcTime"),
    ("negative latency", lambda k, adc, cur: (cur + 0.001, cur), "latency"),
    ("another epoch", lambda k, adc, cur: (adc - 500.0, cur), "latency"),
    # Good for a second, then wrong: stuck, or running at another rate than the frames.
    ("stuck", lambda k, adc, cur: (adc if k < 50 else 700.0 + 49 * FRAMES / RATE, cur),
     "do not increase"),
    ("wrong frame count", lambda k, adc, cur: (700.0 + k * FRAMES / 52000, cur
                                               ) if k >= 50 else (adc, cur), "off the frame"),
])
def test_bad_adc_timestamps_fall_back_to_the_callbacks(
        name: str, spoil: Callable[[int, float, float], tuple[float | None, float | None]],
        reason: str) -> None:
    stream = Stream(ppm=-60.0)
    blocks = [(index, arrival, *spoil(k, adc, current))
              for k, (index, arrival, adc, current) in enumerate(stream.blocks(1500))]
    capture = CaptureClock(RATE)
    times = feed(capture, blocks)
    assert capture.source == "callback", name
    assert reason in (capture.fallback_reason or "")
    truth = card_times(stream.ppm, 700.0, 1500)
    errors = np.asarray(times) - truth
    # The callbacks' rate is right, and block starts never jump: each starts within a tenth
    # of a frame of where the previous one ended at the fitted period, which the jitter
    # makes a little uncertain over the first second.
    report = capture.report()
    assert report is not None and report["source"] == "callback"
    assert report["ppm"] == pytest.approx(-60.0, abs=2.0)
    steps = (np.diff(times) - FRAMES / (RATE * (1 - 60e-6))) * RATE  # in frames
    assert np.max(np.abs(steps)) < 0.5
    assert np.max(np.abs(steps[50:])) < 0.35
    if name in ("stuck", "wrong frame count"):
        # Fell back mid-stream: the callback fit was shifted onto the ADC line it replaced.
        assert np.max(np.abs(errors)) < 30e-6
    else:
        # Callbacks only: block starts settle a constant latency behind the truth.
        assert np.ptp(errors[-250:]) < 10e-6
        assert errors[-1] == pytest.approx(stream.latency, abs=30e-6)


# -- the microphone, with a fake sounddevice ------------------------------------------------


class FakeTime:
    """The monotonic clock the fake stream runs on (faster than real time)."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


@dataclass
class FakeCard:
    """A sound card, ``ppm`` fast against the monotonic clock, and its host API's quirks."""

    fake_time: FakeTime
    ppm: float
    seconds: float = 20.0
    latency: float = 0.004
    jitter: float = 0.0005
    adc: bool = True  # False: inputBufferAdcTime is 0, as on some back-ends

    def __post_init__(self) -> None:
        self.start = self.fake_time.now + 0.01
        self.blocks = round(self.seconds * RATE / FRAMES)
        self.done = threading.Event()

    def capture(self, index: float) -> float:
        """Monotonic time at which frame ``index`` is captured (the truth)."""
        return self.start + index / (RATE * (1 + self.ppm * 1e-6))

    def stream_time(self, mono: float) -> float:
        """PortAudio's stream clock: the card's, counting its own frames from 1000 s."""
        return 1000.0 + (mono - self.start) * (1 + self.ppm * 1e-6)

    def module(self) -> types.ModuleType:
        """A ``sounddevice`` stand-in whose InputStream plays this card from a thread."""
        card = self
        sd = types.ModuleType("sounddevice")

        class PortAudioError(Exception):
            pass

        class InputStream:
            def __init__(self, *, samplerate: int, channels: int, dtype: str, blocksize: int,
                         device: Any, callback: Callable[..., None]) -> None:
                assert (samplerate, blocksize, dtype) == (RATE, FRAMES, "float32")
                self.callback, self.channels = callback, channels
                self.thread = threading.Thread(target=self.run, daemon=True)
                self.closed = threading.Event()

            def start(self) -> None:
                self.thread.start()

            def close(self) -> None:
                self.closed.set()
                self.thread.join()

            def run(self) -> None:
                rng = random.Random(5)
                status = types.SimpleNamespace(input_overflow=False)
                for k in range(card.blocks):
                    if self.closed.is_set():
                        return
                    arrival = card.capture((k + 1) * FRAMES) + card.latency + \
                        rng.expovariate(1 / card.jitter)
                    card.fake_time.now = arrival  # the callback reads the time first
                    info = types.SimpleNamespace(
                        inputBufferAdcTime=card.stream_time(card.capture(k * FRAMES))
                        if card.adc else 0.0,
                        currentTime=card.stream_time(arrival), outputBufferDacTime=0.0)
                    indata = np.full((FRAMES, self.channels), k, dtype=np.float32)
                    self.callback(indata, FRAMES, info, status)
                card.done.set()

        def query_devices(device: Any = None, kind: str | None = None) -> dict[str, Any]:
            return {"name": "fake card", "max_input_channels": 2}

        sd.PortAudioError = PortAudioError  # type: ignore[attr-defined]
        sd.InputStream = InputStream  # type: ignore[attr-defined]
        sd.query_devices = query_devices  # type: ignore[attr-defined]
        return sd


async def play(card: FakeCard, clock: DeviceClock,
               monkeypatch: pytest.MonkeyPatch) -> tuple[MicrophoneSource, list[Any]]:
    """Every block of the fake card, read through a real MicrophoneSource."""
    monkeypatch.setitem(sys.modules, "sounddevice", card.module())
    mic = MicrophoneSource(sample_rate=RATE, clock=clock, monotonic=card.fake_time.monotonic)
    await mic.open()
    try:
        blocks = [await asyncio.wait_for(mic.read(), 10) for _ in range(card.blocks)]
        await wait_until(card.done.is_set, 10)
    finally:
        await mic.close()
    return mic, blocks


@pytest.mark.asyncio
@pytest.mark.parametrize("ppm", [100.0, -100.0])
async def test_microphone_block_times_follow_the_card_clock(
        ppm: float, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = DeviceClock(offset_s=3.0)  # a real device's: on the monotonic clock
    card = FakeCard(FakeTime(), ppm)
    mic, blocks = await play(card, clock, monkeypatch)
    assert [b.index for b in blocks] == [k * FRAMES for k in range(card.blocks)]
    assert [int(b.samples[0, 0]) for b in blocks] == list(range(card.blocks))
    truth = np.asarray([clock.from_monotonic(card.capture(b.index)) for b in blocks])
    t0 = np.asarray([b.t0 for b in blocks])
    fitted = np.max(np.abs(t0 - truth))
    # What counting frames at the nominal rate from the first block would have said.
    nominal = t0[0] + np.asarray([b.index for b in blocks]) / RATE
    counted = np.max(np.abs(nominal - truth))
    print(f"{ppm:+.0f} ppm over {card.seconds:g} s: t0 error {fitted * 1e6:.2f} us with the "
          f"fit, {counted * 1e3:.3f} ms counting frames")
    assert fitted < 20e-6
    assert counted > 1.5e-3
    # Contiguous: each block starts where the previous one ended, to a tenth of a frame.
    steps = np.diff(t0) - FRAMES / (RATE * (1 + ppm * 1e-6)) * clock.rate
    assert np.max(np.abs(steps)) < 0.1 / RATE
    report = mic.audio_clock_report()
    assert report is not None and report["source"] == "adc"
    assert report["ppm"] == pytest.approx(ppm, abs=0.5)
    assert report["points"] == card.blocks and report["residual_us"] < 1.0
    # The recorder's view: any instant maps to its frame. (Off by 2.5 µs, 0.12 frame: the
    # latency PortAudio measures on the card's clock is itself 100 ppm off.)
    at = card.capture(123456.25)
    assert mic.frame_at(clock.from_monotonic(at)) == pytest.approx(123456.25, abs=0.2)


@pytest.mark.asyncio
async def test_microphone_without_adc_timestamps_fits_the_callbacks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = DeviceClock()
    card = FakeCard(FakeTime(), 100.0, seconds=40.0, adc=False)
    mic, blocks = await play(card, clock, monkeypatch)
    report = mic.audio_clock_report()
    assert report is not None and report["source"] == "callback"
    assert mic.capture is not None and "zero" in (mic.capture.fallback_reason or "")
    assert report["ppm"] == pytest.approx(100.0, abs=1.0)
    errors = np.asarray([b.t0 - clock.from_monotonic(card.capture(b.index)) for b in blocks])
    # Late by the card's latency (which callbacks cannot see), but no longer drifting:
    # counting frames would drift 4 ms over the same 40 s.
    late = errors[-500:]
    print(f"callback fit: block times {np.mean(late) * 1e3:.3f} ms late "
          f"(latency {card.latency * 1e3:g} ms), spread {np.ptp(late) * 1e6:.1f} us")
    assert np.ptp(late) < 20e-6
    assert np.mean(late) == pytest.approx(card.latency, abs=50e-6)
    steps = np.abs(np.diff(errors)) * RATE  # in frames: never a jump
    print(f"steps off the true period: at most {np.max(steps):.3f} frame, "
          f"{np.max(steps[50:]):.3f} after the first second")
    assert np.max(steps) < 0.5 and np.max(steps[50:]) < 0.35


# -- a simulated card, through the recorder -----------------------------------------------


def onsets(audio: np.ndarray) -> np.ndarray:
    """Sample index of each click's first sample (clicks start at phase 0 after silence).

    An onset is a loud sample after 480 silent ones (or after all there are, at the
    start): a sample of a click's sine burst near a zero crossing looks silent, and the
    audio may open in the middle of a click (about one time in fifty), neither of which is
    a click's first sample.
    """
    loud = np.abs(audio) > 1e-4
    starts = np.flatnonzero(loud[1:] & ~loud[:-1]) + 1
    return np.asarray([s for s in starts if not loud[max(0, s - 480):s].any()])


@pytest.mark.asyncio
@pytest.mark.parametrize(("spec", "within"), [
    ("click:0.25:audio_ppm=80", 1.0),
    # No ADC timestamps: callbacks late by 200 µs on average, and two seconds of them
    # before the start place it to a sample or two at 48 kHz; a loaded machine adds its
    # loop's delays to every callback, which can shift the fit by a third (CI: 2.01).
    ("click:0.25:audio_ppm=80:jitter_us=200:adc=0", 3.0),
])
async def test_a_scheduled_take_lands_on_the_true_instant_of_a_drifting_card(
        spec: str, within: float, tmp_path: Path) -> None:
    clock = DeviceClock(offset_s=-4.0, drift_ppm=-150.0)
    outbox = Outbox(tmp_path / "outbox")
    recorder = Recorder(spool_dir=tmp_path / "spool", outbox=outbox, device_id="sim-1",
                        source=spec, sample_rate=RATE, channels=1, format="wav", clock=clock)
    # Far enough from the source's opening that nominal counting would be ~8 samples off
    # at the start, and 12 more at the stop.
    start_at = clock.now() + 2.0
    stop_at = start_at + 3.0
    await recorder.start(Command(command_id="c-1", action=Action.START, take_id="take-1",
                                 start_at=start_at), offline=True)
    rec = await recorder.stop("take-1", stop_at)
    item = outbox.get(rec.recording_id)
    assert item is not None
    audio, rate = sf.read(item.path, dtype="float64")
    assert rate == RATE
    # Ground truth: frames per TRUE second of a card 80 ppm fast on a clock 150 ppm slow.
    per_true_s = RATE * (1 + 80e-6) * clock.rate
    true_start = clock.true_time(start_at)
    found = onsets(audio)
    assert len(found) >= 11
    firsts = []
    for j in found:
        # Click m sounds at the true instant m * 0.25, a 2 kHz sine from phase 0: the phase
        # of its first sample j gives how long after the instant j was captured, hence the
        # true time of the take's first sample.
        since = math.asin(audio[j] / 0.8) / (2 * math.pi * 2000.0)
        m = round((true_start + j / per_true_s) / 0.25)
        firsts.append(m * 0.25 + since - j / per_true_s)
    off = (np.asarray(firsts) - true_start) * per_true_s  # in samples
    stop_off = (firsts[0] + rec.frames / per_true_s - clock.true_time(stop_at)) * per_true_s
    print(f"{spec}: first sample {off[0]:+.3f} samples from the true start instant "
          f"(spread over the clicks {np.ptp(off):.3f}); end {stop_off:+.3f} samples from "
          f"the true stop instant")
    assert np.max(np.abs(off)) <= within
    assert np.ptp(off) < 0.05  # the clicks agree: the samples are the card's, to the end
    assert abs(stop_off) <= within
    # The fitted card clock travels with the recording: its own result, then the outbox.
    assert rec.audio_clock is not None
    assert rec.audio_clock["source"] == ("callback" if "adc=0" in spec else "adc")
    # Callback arrivals also carry the loop's own delays, which a loaded machine makes
    # longer and more frequent: that fit is looser than the ADC timestamps'.
    assert rec.audio_clock["ppm"] == pytest.approx(80.0, abs=10.0 if "adc=0" in spec else 3.0)
    assert rec.audio_clock["points"] > 200
    assert item.recording.audio_clock == rec.audio_clock
    stored = json.loads(item.meta_path.read_text())
    assert stored["recording"]["audio_clock"] == rec.audio_clock


@pytest.mark.asyncio
async def test_clicks_follow_true_time_under_the_card_clock() -> None:
    clock = DeviceClock(offset_s=7.0, drift_ppm=150.0)
    source = ClickSource(period_s=0.1, sample_rate=16000, clock=clock, audio_drift_ppm=-400)
    assert source.simulates_card
    async with source:
        blocks = [await source.read() for _ in range(60)]
    audio = np.concatenate([b.samples[:, 0] for b in blocks])
    per_true_s = 16000 * (1 - 400e-6) * clock.rate
    found = onsets(audio)
    true0 = clock.true_time(source.capture_time(0))
    for j in found:
        since = (true0 + j / per_true_s) % 0.1
        # At epoch scale a float carries about 0.2 µs: a sample on the click instant itself
        # may come out a hair before it, that is just under a whole period.
        if since > 0.1 - 1e-6:
            since -= 0.1
        assert -1e-6 < since < 1 / per_true_s + 1e-9  # the first sample at or after a click
    # Counting the nominal rate would misplace the last click by 400 ppm of 1.2 s: 8 samples.
    assert len(found) >= 11
    # Block times are the fitted card clock's: the truth, to well within a sample.
    for b in blocks:
        assert abs(b.t0 - source.capture_time(b.index)) < 0.05 / 16000


@pytest.mark.asyncio
async def test_the_audio_clock_goes_up_with_the_upload(server: Any, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A tus metadata field, compact JSON: the server takes the upload (it ignores the
    # fields it does not know; storing this one is its side's to add).
    audio_clock = {"source": "adc", "rate_hz": 48003.84, "ppm": 80.0, "residual_us": 0.4,
                   "points": 250}
    path = tmp_path / "rec-ac-1.wav"
    sf.write(path, np.zeros((4800, 1), dtype=np.float32), RATE, subtype="PCM_16")
    data = path.read_bytes()
    rec = FinishedRecording(path, "rec-ac-1", "take-1", "sim-1", 1700000000.5, RATE, 1, 4800,
                            len(data), hashlib.sha256(data).hexdigest(), "wav",
                            audio_clock=audio_clock)
    outbox = Outbox(tmp_path / "outbox")
    item = outbox.add(rec)
    uploader = Uploader(server.url)
    sent: list[dict[str, str]] = []
    request = uploader._request

    def spy(method: str, url: str, headers: dict[str, str], body: object = None) -> Any:
        if method == "POST":
            sent.append(headers)
        return request(method, url, headers, body)

    monkeypatch.setattr(uploader, "_request", spy)
    assert await asyncio.to_thread(uploader.upload, outbox, item) == "rec-ac-1"
    fields = dict(pair.split(" ") for pair in sent[0]["Upload-Metadata"].split(","))
    assert json.loads(base64.b64decode(fields["audio_clock"])) == audio_clock
