"""Recovery after a crash, directly and fast: a spool abandoned open, or cut by a power cut.

What a crash leaves is built in the test, from a real `SpoolWriter`: the spool directory as
it is on disk while the writer is still open (a SIGKILL leaves exactly that), or that copy
cut short the way a power cut can cut it (the page cache lost past some byte). `recover`
must then give back every whole frame on disk, bit for bit, and nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vocalink_lab.agent.outbox import Outbox
from vocalink_lab.agent.spool import SpoolWriter, recover, sidecar_path

RATE = 8000
CHANNELS = 2
ALIGN = 2 * CHANNELS  # bytes per PCM_16 frame
HEADER = 44


def pcm16_noise(frames: int, seed: int) -> np.ndarray:
    """Float samples PCM_16 holds exactly, so that decoded audio compares equal."""
    ints = np.random.default_rng(seed).integers(-32768, 32768, size=(frames, CHANNELS))
    return (ints / 32768).astype(np.float32)


async def open_spool(folder: Path, x: np.ndarray, *, synced: int, unsynced: int) -> SpoolWriter:
    """A spool left open: ``synced`` frames on disk, ``unsynced`` more only in memory."""
    writer = SpoolWriter(folder / "take.wav", RATE, CHANNELS, recording_id="rec-crash",
                         take_id="take-7", device_id="mic-2", started_at=1234.5,
                         sync_every_s=3600)  # no background sync: the test says when
    for i in range(0, synced, 100):
        await writer.write(x[i:min(i + 100, synced)])
    await writer.sync()
    await writer.write(x[synced:synced + unsynced])
    return writer


def crash_copy(spool: Path, crashed: Path) -> Path:
    """The spool directory as a crash would leave it right now (the writer still open)."""
    shutil.copytree(spool, crashed)
    return crashed


def decoded(path: Path) -> np.ndarray:
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == RATE
    return y


@pytest.mark.asyncio
async def test_a_spool_abandoned_open_is_recovered_up_to_its_last_sync(tmp_path: Path) -> None:
    x = pcm16_noise(3000, seed=1)
    writer = await open_spool(tmp_path / "spool", x, synced=2500, unsynced=500)
    try:
        crashed = crash_copy(tmp_path / "spool", tmp_path / "crashed")
    finally:
        await writer.close()  # the original, for cleanliness; the copy is the crash
    side = json.loads(sidecar_path(crashed / "take.wav").read_text())
    assert side["state"] == "recording"

    [rec] = recover(crashed)
    assert (rec.recording_id, rec.take_id, rec.device_id, rec.started_at) == \
        ("rec-crash", "take-7", "mic-2", 1234.5)
    assert rec.recovered and rec.format == "wav" and rec.path == crashed / "take.wav"
    assert rec.frames == 2500  # what was synced; the 500 in memory died with the process
    assert rec.bytes == HEADER + 2500 * ALIGN == rec.path.stat().st_size
    np.testing.assert_array_equal(decoded(rec.path), x[:2500])
    # Still there for the next start-up until the outbox has taken it.
    assert recover(crashed) == [rec]


@pytest.mark.asyncio
@pytest.mark.parametrize(("cut_frames", "extra_bytes"), [
    (2500, 0),  # at the last sync
    (1700, 0),  # before it: the latest data never reached the platter
    (1700, 3),  # in the middle of a frame
    (0, 2),  # nothing but the header survived, and a torn frame
])
async def test_a_power_cut_that_loses_the_tail_keeps_every_whole_frame(
        tmp_path: Path, cut_frames: int, extra_bytes: int) -> None:
    x = pcm16_noise(2500, seed=2)
    writer = await open_spool(tmp_path / "spool", x, synced=2500, unsynced=0)
    try:
        crashed = crash_copy(tmp_path / "spool", tmp_path / "crashed")
    finally:
        await writer.close()
    wav = crashed / "take.wav"
    with open(wav, "r+b") as f:  # the header still claims 2500 frames: more than is left
        f.truncate(HEADER + cut_frames * ALIGN + extra_bytes)

    [rec] = recover(crashed)
    assert rec.recovered and rec.frames == cut_frames
    assert rec.bytes == HEADER + cut_frames * ALIGN == wav.stat().st_size  # torn frame cut
    assert sf.info(wav).frames == cut_frames
    np.testing.assert_array_equal(decoded(wav), x[:cut_frames])


@pytest.mark.asyncio
async def test_frames_written_after_the_last_header_update_are_kept(tmp_path: Path) -> None:
    """A crash between a sync's data fsync and its header update: data the header omits."""
    x = pcm16_noise(3000, seed=3)
    writer = await open_spool(tmp_path / "spool", x, synced=1000, unsynced=0)
    try:
        crashed = crash_copy(tmp_path / "spool", tmp_path / "crashed")
    finally:
        await writer.close()
    with open(crashed / "take.wav", "ab") as f:
        f.write(np.rint(x[1000:] * 32768).astype("<i2").tobytes())
    assert sf.info(crashed / "take.wav").frames == 1000  # what the header says

    [rec] = recover(crashed)
    assert rec.frames == 3000
    np.testing.assert_array_equal(decoded(rec.path), x)


@pytest.mark.asyncio
async def test_a_recovered_spool_goes_to_the_outbox_and_is_released(tmp_path: Path) -> None:
    """What the agent does at start-up: recover, queue, and the spool directory is empty."""
    x = pcm16_noise(2000, seed=4)
    writer = await open_spool(tmp_path / "spool", x, synced=1500, unsynced=500)
    try:
        crashed = crash_copy(tmp_path / "spool", tmp_path / "crashed")
    finally:
        await writer.close()
    outbox = Outbox(tmp_path / "outbox")
    [rec] = recover(crashed)
    item = outbox.add(rec, recorded_offline=False)
    assert item.recording.recovered and item.recording.frames == 1500
    assert item.path == tmp_path / "outbox" / "rec-crash.wav"
    assert list(crashed.iterdir()) == [] and recover(crashed) == []
    assert Outbox(tmp_path / "outbox").pending() == [item]
    np.testing.assert_array_equal(decoded(item.path), x[:1500])
