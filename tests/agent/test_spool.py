"""SpoolWriter and recover(): the file on disk is readable at any moment, and nothing is lost."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.wait import wait_until
from vocalink_lab.agent import spool as spool_mod
from vocalink_lab.agent.spool import (
    FinishedRecording,
    SpoolWriter,
    recover,
    release,
    sidecar_path,
)

ROOT = Path(__file__).resolve().parents[2]


def pcm16_noise(frames: int, channels: int, seed: int = 0) -> np.ndarray:
    """Float samples that PCM_16 holds exactly (k / 32768), so round trips compare equal."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-32768, 32768, size=(frames, channels))
    return (ints / 32768).astype(np.float32)


async def write_blocks(writer: SpoolWriter, x: np.ndarray, block: int = 160) -> None:
    for i in range(0, len(x), block):
        await writer.write(x[i:i + block])


def decode(data: bytes, tmp_path: Path, name: str = "copy.wav") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    y, _ = sf.read(path, dtype="float32", always_2d=True)
    return y


@pytest.mark.asyncio
@pytest.mark.parametrize("fmt", ["wav", "flac"])
@pytest.mark.parametrize("channels", [1, 2])
async def test_finalize_round_trip(tmp_path: Path, fmt: str, channels: int) -> None:
    x = pcm16_noise(8000 * 3 + 17, channels)
    path = tmp_path / "spool" / "take.wav"
    writer = SpoolWriter(path, 8000, channels, recording_id="r1", take_id="t1",
                         device_id="mic-1", started_at=1234.5, format=fmt)
    async with writer:
        await write_blocks(writer, x)
        rec = await writer.finalize()
    assert rec.path == path.with_suffix("." + fmt) and rec.format == fmt
    assert (rec.recording_id, rec.take_id, rec.device_id, rec.started_at) == \
        ("r1", "t1", "mic-1", 1234.5)
    assert (rec.sample_rate, rec.channels, rec.frames, rec.recovered) == \
        (8000, channels, len(x), False)
    data = rec.path.read_bytes()
    assert rec.bytes == len(data)
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    y, sr = sf.read(rec.path, dtype="float32", always_2d=True)
    assert sr == 8000 and sf.info(rec.path).subtype == "PCM_16"
    np.testing.assert_array_equal(y, x)
    if fmt == "flac":
        assert not path.exists()  # the WAV spool is gone once the FLAC is in place
    assert await writer.finalize() is rec
    side = json.loads(sidecar_path(path).read_text())
    assert side["state"] == "finished" and side["sha256"] == rec.sha256
    assert recover(path.parent) == [rec]  # finished but not yet handed over
    release(rec.path)
    assert recover(path.parent) == []
    assert sorted(p.name for p in path.parent.iterdir()) == [f"take.{fmt}"]


@pytest.mark.asyncio
@pytest.mark.parametrize(("subtype", "fmt", "atol"), [("PCM_24", "flac", 2**-23),
                                                      ("PCM_32", "wav", 2**-31),
                                                      ("FLOAT", "wav", 0.0)])
async def test_other_subtypes(tmp_path: Path, subtype: str, fmt: str, atol: float) -> None:
    x = np.random.default_rng(1).uniform(-1, 1, (4001, 2)).astype(np.float32)
    writer = SpoolWriter(tmp_path / "s.wav", 16000, 2, subtype)
    await write_blocks(writer, x)
    rec = await writer.finalize(fmt)
    y, _ = sf.read(rec.path, dtype="float32")
    assert sf.info(rec.path).subtype == subtype
    np.testing.assert_allclose(y, x, rtol=0, atol=atol)


@pytest.mark.asyncio
async def test_pcm16_conversion_clips_and_takes_int16(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path / "s.wav", 8000, 1)
    await writer.write(np.array([1.0, -1.0, 2.0, -2.0, np.nan, 0.5], dtype=np.float32))
    await writer.write(np.array([[7], [-7]], dtype=np.int16))
    rec = await writer.finalize()
    y, _ = sf.read(rec.path, dtype="int16")
    assert y.tolist() == [32767, -32768, 32767, -32768, 0, 16384, 7, -7]


@pytest.mark.asyncio
async def test_a_copy_at_any_moment_decodes(tmp_path: Path) -> None:
    """A crash at any instant leaves what a copy taken then holds: readable, a true prefix."""
    sr = 8000
    x = pcm16_noise(sr * 2, 2, seed=5)
    writer = SpoolWriter(tmp_path / "take.wav", sr, 2, sync_every_s=0.05, recording_id="r")
    await writer.open()
    snapshots = []
    for i in range(0, len(x), 160):
        await writer.write(x[i:i + 160])
        if i == len(x) // 2:
            # Half-way, at least one background sync has landed, whatever the disk's speed.
            await wait_until(lambda: writer.synced_frames > 0)
        if i % 480 == 0:
            await asyncio.sleep(0)  # a loop turn: background syncs start and land as they go
            synced = writer.synced_frames
            snapshots.append((synced, writer.path.read_bytes()))
    assert snapshots[-1][0] > 0
    for k, (synced, data) in enumerate(snapshots):
        y = decode(data, tmp_path)
        assert len(y) >= synced
        np.testing.assert_array_equal(y, x[:len(y)])
        # recover() takes in every whole frame on disk, even past the last header update.
        crash = tmp_path / f"crash{k}"
        crash.mkdir()
        (crash / "take.wav").write_bytes(data)
        (crash / "take.spool.json").write_bytes(writer.sidecar_path.read_bytes())
        [rec] = recover(crash)
        assert rec.recovered and rec.format == "wav"
        assert rec.frames == (len(data) - 44) // 4
        y, _ = sf.read(rec.path, dtype="float32", always_2d=True)
        np.testing.assert_array_equal(y, x[:rec.frames])
    await writer.close()


@pytest.mark.asyncio
async def test_recover_cuts_a_partial_frame_and_keeps_unsynced_frames(tmp_path: Path) -> None:
    x = pcm16_noise(1000, 2, seed=2)
    writer = SpoolWriter(tmp_path / "take.wav", 8000, 2, recording_id="r", started_at=5.0)
    await writer.write(x[:600])
    await writer.sync()
    with open(writer.path, "ab") as f:  # what a crash mid-write leaves: no header update
        raw = np.rint(x[600:] * 32768).astype("<i2").tobytes()
        f.write(raw + b"\x01\x02\x03")  # plus three bytes of a frame that never completed
    assert len(decode(writer.path.read_bytes(), tmp_path)) == 600
    [rec] = recover(writer.path)
    assert (rec.recording_id, rec.started_at, rec.frames, rec.recovered) == ("r", 5.0, 1000, True)
    assert rec.bytes == 44 + 1000 * 4 == rec.path.stat().st_size
    assert rec.sha256 == hashlib.sha256(rec.path.read_bytes()).hexdigest()
    y, _ = sf.read(rec.path, dtype="float32")
    np.testing.assert_array_equal(y, x)
    await writer.close()


@pytest.mark.asyncio
async def test_closed_unfinished_spool_is_recovered(tmp_path: Path) -> None:
    x = pcm16_noise(2345, 1)
    async with SpoolWriter(tmp_path / "take.wav", 8000, 1, format="flac") as writer:
        await write_blocks(writer, x)
    with pytest.raises(RuntimeError, match="closed"):
        await writer.write(x)
    [rec] = recover(tmp_path)
    assert rec.format == "wav" and rec.recovered  # recovery keeps WAV, whatever was asked
    y, _ = sf.read(rec.path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(y, x)
    # A second start-up returns it again, until it is released.
    assert recover(tmp_path) == [rec]


@pytest.mark.asyncio
async def test_interrupted_flac_conversion_keeps_the_wav(tmp_path: Path) -> None:
    x = pcm16_noise(3000, 1)
    async with SpoolWriter(tmp_path / "take.wav", 8000, 1) as writer:
        await writer.write(x)
    (tmp_path / "take.flac.part").write_bytes(b"fLaC half")
    [rec] = recover(tmp_path)
    assert rec.path.name == "take.wav" and rec.frames == 3000
    assert not (tmp_path / "take.flac.part").exists()


@pytest.mark.asyncio
async def test_finished_flac_with_leftover_wav(tmp_path: Path) -> None:
    x = pcm16_noise(3000, 1)
    writer = SpoolWriter(tmp_path / "take.wav", 8000, 1)
    await writer.write(x)
    wav_bytes = (await writer.sync(), writer.path.read_bytes())[1]
    rec = await writer.finalize("flac")
    (tmp_path / "take.wav").write_bytes(wav_bytes)  # crash before the WAV was removed
    assert recover(tmp_path) == [rec]
    assert not (tmp_path / "take.wav").exists()


def test_recover_renames_what_it_cannot_read(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                             ) -> None:
    meta = {"file": "bad.wav", "state": "recording", "recording_id": "bad", "started_at": 0.0,
            "sample_rate": 8000, "channels": 1, "subtype": "PCM_16"}
    (tmp_path / "bad.spool.json").write_text(json.dumps(meta))
    (tmp_path / "bad.wav").write_bytes(b"not a wav file at all" * 10)
    (tmp_path / "lost.spool.json").write_text(json.dumps({**meta, "file": "lost.wav"}))
    (tmp_path / "junk.spool.json").write_text("{not json")
    assert recover(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.spool.json.corrupt", "bad.wav.corrupt", "junk.spool.json.corrupt",
        "lost.spool.json.corrupt"]
    assert (tmp_path / "bad.wav.corrupt").read_bytes() == b"not a wav file at all" * 10
    assert "cannot be made readable" in caplog.text and "missing" in caplog.text


def test_recover_ignores_a_plain_wav(tmp_path: Path) -> None:
    sf.write(tmp_path / "x.wav", np.zeros(10), 8000)
    assert recover(tmp_path / "x.wav") == [] == recover(tmp_path)
    assert (tmp_path / "x.wav").exists()


@pytest.mark.asyncio
async def test_syncs_never_block_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """A disk stuck in fsync (an SD card having a bad day) holds up no write.

    Ordered by events, not timed: the first background fsync is held until the test lets
    it go, and every write made meanwhile must return while it is still held.
    """
    loop_thread = threading.get_ident()
    in_fsync = threading.Event()  # a worker thread is inside the held fsync
    release = threading.Event()
    on_loop: list[int] = []

    def held(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            if threading.get_ident() == loop_thread:
                on_loop.append(fd)  # the defect itself: recorded, and not held (no deadlock)
            else:
                in_fsync.set()
                # Released by the test; the timeout only keeps a write that waits for the
                # disk (the defect) from hanging the test: then it lets every fsync go.
                if not release.wait(10):
                    release.set()
            real(fd)
        return sync

    writer = SpoolWriter(tmp_path / "take.wav", 16000, 1, sync_every_s=0.1)
    await writer.open()
    monkeypatch.setattr(os, "fsync", held(os.fsync))
    monkeypatch.setattr(os, "fdatasync", held(getattr(os, "fdatasync", os.fsync)))
    x = pcm16_noise(16000, 1)
    blocks = [x[i:i + 320] for i in range(0, len(x), 320)]
    returned_while_held = 0
    for block in blocks[:5]:  # 0.1 s of audio: a sync is due
        await writer.write(block)
        returned_while_held += in_fsync.is_set() and not release.is_set()
    assert on_loop == [], "an fsync ran on the event loop"
    assert await asyncio.to_thread(in_fsync.wait, 10), "no sync started in a worker thread"
    for block in blocks[5:]:
        await writer.write(block)
        returned_while_held += in_fsync.is_set() and not release.is_set()
    assert returned_while_held >= len(blocks) - 5, "writes waited for the stuck fsync"
    assert writer.frames == len(x) and writer.synced_frames == 0  # the disk is still stuck
    release.set()
    monkeypatch.undo()
    rec = await writer.finalize()
    assert rec.frames == len(x)
    y, _ = sf.read(rec.path, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(y, x)


@pytest.mark.asyncio
async def test_a_failed_sync_is_reported_and_keeps_the_synced_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = SpoolWriter(tmp_path / "take.wav", 8000, 1, sync_every_s=0.1)
    x = pcm16_noise(4000, 1)
    await writer.write(x[:1000])
    await writer.sync()
    disk_full = threading.Event()

    def full(fd: int) -> None:
        disk_full.set()
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_mod, "_fdatasync", full)
    for i in range(1000, 2000, 100):  # 0.125 s: a background sync starts, and fails
        await writer.write(x[i:i + 100])
    assert await asyncio.to_thread(disk_full.wait, 30)
    with pytest.raises(OSError, match="No space"):
        await writer.sync()  # waits for the failed background sync, then fails itself
    with pytest.raises(OSError, match="No space"):  # the background failure, kept
        await writer.write(x[2000:2100])
    monkeypatch.undo()
    await writer.close()
    [rec] = recover(tmp_path)
    assert rec.frames >= 1000
    y, _ = sf.read(rec.path, dtype="float32")
    np.testing.assert_array_equal(y, x[:rec.frames, 0])


@pytest.mark.asyncio
async def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\*\.wav"):
        SpoolWriter(tmp_path / "take.flac", 8000, 1)
    with pytest.raises(ValueError, match="subtype"):
        SpoolWriter(tmp_path / "take.wav", 8000, 1, "PCM_12")
    with pytest.raises(ValueError, match="FLAC"):
        SpoolWriter(tmp_path / "take.wav", 8000, 1, "FLOAT", format="flac")
    with pytest.raises(ValueError, match="format"):
        SpoolWriter(tmp_path / "take.wav", 8000, 1, format="mp3")
    writer = SpoolWriter(tmp_path / "take.wav", 8000, 2)
    with pytest.raises(ValueError, match="shape"):
        await writer.write(np.zeros(10, dtype=np.float32))
    with pytest.raises(FileExistsError):  # never over another spool
        await SpoolWriter(tmp_path / "take.wav", 8000, 2).open()
    (tmp_path / "other.wav").write_bytes(b"precious")
    with pytest.raises(FileExistsError):  # nor over any audio
        await SpoolWriter(tmp_path / "other.wav", 8000, 2).open()
    assert (tmp_path / "other.wav").read_bytes() == b"precious"
    assert not (tmp_path / "other.spool.json").exists()
    await writer.close()


def test_finished_recording_dict() -> None:
    rec = FinishedRecording(Path("/x/a.wav"), "a", None, "d", 1.0, 8000, 1, 4000, 8044, "00",
                            "wav")
    assert rec.to_dict()["path"] == "/x/a.wav" and rec.duration_s == 0.5
    assert json.loads(json.dumps(rec.to_dict()))["recovered"] is False


RECORDER = textwrap.dedent("""
    import asyncio, sys
    from vocalink_lab.agent.sources import ToneSource
    from vocalink_lab.agent.spool import SpoolWriter

    async def main():
        source = ToneSource(1000.0, 0.5, sample_rate=16000)
        writer = SpoolWriter(sys.argv[1], 16000, 1, recording_id="killed", device_id="mic-9")
        said = False
        async with source:
            await writer.open()
            print("recording", flush=True)
            while True:
                await writer.write((await source.read()).samples)
                if not said and writer.synced_frames >= 16000:
                    print("synced", writer.synced_frames, flush=True)  # 1 s is on disk
                    said = True

    asyncio.run(main())
""")


@pytest.mark.serial
def test_sigkill_mid_recording(tmp_path: Path) -> None:
    path = tmp_path / "spool" / "take.wav"
    proc = subprocess.Popen([sys.executable, "-c", RECORDER, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "recording", proc.stderr.read() if proc.stderr else line
        line = proc.stdout.readline()  # killed only once a second of audio is durable
        assert line.startswith("synced"), proc.stderr.read() if proc.stderr else line
        synced = int(line.split()[1])
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    [rec] = recover(path.parent)
    assert (rec.recording_id, rec.device_id, rec.recovered) == ("killed", "mic-9", True)
    assert rec.frames >= synced
    y, sr = sf.read(rec.path, dtype="float32")
    assert sr == 16000 and len(y) == rec.frames
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert np.argmax(spectrum) * sr / len(y) == pytest.approx(1000.0, abs=2 * sr / len(y))
    k = np.arange(len(y))
    np.testing.assert_allclose(y, 0.5 * np.sin(2 * np.pi * 1000 * k / 16000), atol=1e-4)
