"""The Lab facade: a server on the test's loop, simulated devices, a take, the DataFrames."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from tests.conftest import fast_settings
from tests.support.wait import wait_until
from vocalink_lab.agent import simulate_devices
from vocalink_lab.errors import InvalidParameter, NotFound
from vocalink_lab.lab import Lab, connect

pytestmark = pytest.mark.asyncio


async def start_lab(data_dir: Path) -> Lab:
    return await Lab.start(data_dir=data_dir, port=0, host="127.0.0.1", advertise=False,
                           settings=fast_settings(data_dir))


async def test_a_take_from_start_to_dataframes(tmp_path: Path) -> None:
    lab = await start_lab(tmp_path / "data")
    sim = await simulate_devices(2, server_url=lab.url, state_dir=tmp_path / "devices",
                                 sample_rate=16000)
    try:
        assert await start_lab(tmp_path / "data") is lab  # idempotent
        assert not lab.attached and lab.server is not None
        await lab.wait_for_devices(2, timeout_s=10)
        devices = lab.devices
        assert len(devices) == 2 and set(devices["state"]) == {"IDLE"}
        assert devices["connected"].all()

        started = await lab.start_recording()
        assert all(o["status"] == "SUCCESS" for o in started["outcomes"].values()), started
        await wait_until(lambda: set(lab.devices["state"]) == {"RECORDING"}, timeout=5)
        await asyncio.sleep(0.5)  # the take: its length is what the devices record
        stopped = await lab.stop_recording()
        recordings = await lab.wait_for_recordings(started["take_id"], 2, timeout_s=20)
        assert {r["device_id"] for r in recordings} == set(devices.index)
        frame = lab.recordings
        assert len(frame) == 2 and set(frame["take_id"]) == {started["take_id"]}
        # Both devices recorded from the scheduled START to the scheduled STOP.
        span = stopped["start_at"] - started["start_at"]
        assert frame["duration_s"].tolist() == pytest.approx([span, span], abs=0.05)
        await wait_until(lambda: len(lab.takes) == 1, timeout=5)
        assert lab.takes.index[0] == started["take_id"]

        rid = frame.index[0]
        path = await lab.path_of(rid)
        assert path.is_file() and path.is_relative_to(tmp_path / "data")
        audio, rate = await lab.load(rid)
        assert rate == 16000 and audio.shape[0] == 1
        assert isinstance(await lab.plot(rid), Figure)
        assert isinstance(await lab.plot(rid, "spectrogram"), Figure)
        assert "<b>vocalink Lab</b>" in lab._repr_html_() and "2/2 devices" in lab._repr_html_()

        with pytest.raises(NotFound, match="no device 'nope'"):
            await lab.start_recording(["nope"])
        with pytest.raises(InvalidParameter, match="waveform"):
            await lab.plot(rid, "bars")
        with pytest.raises(NotFound, match="rec-missing"):
            await lab.path_of("rec-missing")

        await lab.delete(rid)
        await wait_until(lambda: rid not in lab.recordings.index, timeout=5)
        assert not path.exists()
    finally:
        await sim.stop()
        await lab.stop()
    assert not (tmp_path / "data" / "vocalink.lock").read_text()


async def test_a_second_kernel_attaches_instead_of_starting_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    lab = await start_lab(data)
    try:
        await lab.rename("Studio A")
        script = (
            "import asyncio, json\n"
            "from vocalink_lab.lab import Lab\n"
            "async def main():\n"
            f"    lab = await Lab.start(data_dir={str(data)!r}, port=0, advertise=False)\n"
            "    print(json.dumps({'attached': lab.attached, 'url': lab.url, 'name': lab.name}))\n"
            "    await lab.stop()\n"
            "asyncio.run(main())\n")
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True,
            timeout=60)
        assert result.returncode == 0, result.stderr
        other = json.loads(result.stdout.strip().splitlines()[-1])
        assert other == {"attached": True, "url": lab.url, "name": "Studio A"}
        assert lab.server is not None and lab.server.port is not None  # still serving

        remote = await connect(lab.url)
        try:
            assert remote.attached and remote.name == "Studio A"
            assert remote.data_dir == data.resolve()  # same machine: files read in place
            await lab.rename("Studio B")
            await wait_until(lambda: remote.name == "Studio B", timeout=5)
        finally:
            await remote.stop()
    finally:
        await lab.stop()



async def test_enhance_and_merge_follow_their_jobs_and_bad_ones_read_well(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.http import Api
    from vocalink_lab.audio import save, synth

    with ThreadPoolExecutor(2) as executor:
        lab = await Lab.start(data_dir=tmp_path / "data", port=0, host="127.0.0.1",
                              advertise=False, settings=fast_settings(tmp_path / "data"),
                              executor=executor)
        api = Api(lab.url)
        try:
            voice = synth.speech_like(3.0, 16000, seed=5)
            ids = []
            for i, start in enumerate((0.0, 0.2)):
                heard = voice[round(start * 16000):]
                path = tmp_path / f"part{i}.wav"
                save(path, synth.mix_at_snr(heard, synth.noise(heard.size, seed=i), 10), 16000)
                ids.append(f"rec-part{i}")
                status, body = await api.upload(path.read_bytes(), recording_id=ids[-1],
                                                take_id="take-x",
                                                started_at=str(1700000000 + start))
                assert status == 201, body
            await wait_until(lambda: len(lab.recordings) == 2, timeout=5)
            enhanced = await lab.enhance(ids[0], "auto", progress=True)
            assert enhanced["kind"] == "enhanced" and enhanced["parents"] == [ids[0]]
            assert "enhance rec-part0" in capsys.readouterr().err  # the tqdm bar
            merged = await lab.merge(take_id="take-x", mode="mix", progress=False)
            assert merged["kind"] == "merged" and sorted(merged["parents"]) == ids
            assert all(j["state"] == "succeeded" for j in lab.job_list())
            with pytest.raises(InvalidParameter, match="preset"):
                await lab.enhance(ids[0], "loudest")
            with pytest.raises(InvalidParameter, match="prop_decrease"):
                await lab.enhance(ids[0], "auto", prop_decrease=4)
        finally:
            api.close()
            await lab.stop()
