"""Transcribing files with the real whisper base model: espeak-ng speech at known times.

Harvard sentences spoken by espeak-ng (`benchmarks/_heldout.py`'s ``speak``), placed
at known instants in silence with a faint noise floor; the sentences used are ones
whisper base gets right from these voices. The model is loaded once per process.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.speech import Placement, render, speech_file, spoken
from tests.support.speech import word_error_rate as wer
from vocalink_lab.audio.transcribe import model as asr
from vocalink_lab.audio.transcribe.engine import ENHANCE_SHARE, transcribe_file
from vocalink_lab.audio.transcribe.transcript import Transcript
from vocalink_lab.errors import ParameterError

SR = 16000
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SALT = "The salt breeze came across from the sea."
PATH = "Take the winding path to reach the lake."
TEA = "A pot of tea helps to pass the evening."
WOMAN = "Help the woman get back to her feet."
FISH = "The fish twisted and turned on the bent hook."
TANK = "Two blue fish swam in the tank."
BOY = "The boy was there when the sun rose."

# -- helpers ---------------------------------------------------------------------------------


def sentence_end(start: float, text: str, voice: str) -> float:
    return start + spoken(text, voice).size / SR


def normal_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def phrase_at(transcript: Transcript, phrase: str) -> list[float]:
    """The start of each occurrence of ``phrase`` among the transcript's words."""
    words = [w for s in transcript.segments for w in s.words]
    names = [" ".join(normal_words(w.word)) for w in words]
    target = normal_words(phrase)
    return [words[i].start for i in range(len(names) - len(target) + 1)
            if names[i:i + len(target)] == target]


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _packaged_model() -> Iterator[None]:
    """The packaged model (from the suite's model cache, ``VOCALINK_ASR_CACHE``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(asr.MODEL_ENV, raising=False)
        yield


@pytest.fixture(scope="module")
def two_sentences(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Placement]]:
    placements = [(0.5, SALT, "en-us"), (4.0, PATH, "en-gb")]
    path = tmp_path_factory.mktemp("speech") / "two.wav"
    return speech_file(path, placements, seconds=7.0), placements


# -- tests -------------------------------------------------------------------------------------


def test_a_known_sentence_is_transcribed(two_sentences: tuple[Path, list[Placement]]) -> None:
    path, placements = two_sentences
    fractions: list[float] = []
    transcript = transcribe_file(path, progress=fractions.append)
    assert wer(f"{SALT} {PATH}", transcript.text) <= 0.15, transcript.text
    assert transcript.language == "en" and 0.5 < transcript.language_probability <= 1.0
    assert (transcript.kind, transcript.model, transcript.enhanced) == (
        "recording", "whisper-base", False)
    assert transcript.engine.startswith("faster-whisper 1.") and "int8" in transcript.engine
    assert transcript.duration_s == pytest.approx(7.0)
    words = [w for s in transcript.segments for w in s.words]
    starts = [w.start for w in words]
    assert starts == sorted(starts) and len(words) >= 14
    assert all(0.0 <= w.start <= w.end <= transcript.duration_s for w in words)
    assert all(0.0 < w.probability <= 1.0 and w.word == w.word.strip() for w in words)
    for segment in transcript.segments:
        assert segment.text and 0.0 < segment.confidence <= 1.0
        assert segment.start <= segment.words[0].start and segment.end >= segment.words[-1].end
    for start, text, voice in placements:
        first = text.split()[0].lower()
        at = [w.start for w in words if normal_words(w.word) == [first]]
        assert any(abs(t - start) <= 0.5 for t in at), (text, at)
        assert all(start - 0.5 <= t <= sentence_end(start, text, voice) + 0.5
                   for t in phrase_at(transcript, normal_words(text)[-1]))
    # Progress: non-decreasing, reported along the way (once per segment at least), 1 at the end.
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert len(fractions) >= len(transcript.segments) + 1
    assert any(0.0 < f < 1.0 for f in fractions)


def test_a_given_language_is_used_as_certain(two_sentences: tuple[Path, list[Placement]]) -> None:
    transcript = transcribe_file(two_sentences[0], language="EN", beam_size=1)
    assert (transcript.language, transcript.language_probability) == ("en", 1.0)
    assert wer(f"{SALT} {PATH}", transcript.text) <= 0.25, transcript.text


#: Sentences 0.5 s apart from about 30 s to 41 s and from 63 s to 83 s: wherever the
#: 40 s windows are cut (the quietest stretch in a window's last 10 s), the seams fall
#: in those short pauses, between two sentences.
LONG = [(5.0, BOY, "en-us"),
        (30.5, TEA, "en-gb"), (33.6, WOMAN, "en-us"), (36.5, FISH, "en-us"),
        (39.9, TANK, "en-gb"),
        (63.0, TANK, "en-gb"), (65.5, SALT, "en-us"), (68.5, PATH, "en-gb"),
        (71.5, BOY, "en-us"), (74.2, TEA, "en-gb"), (77.3, WOMAN, "en-us"),
        (80.2, FISH, "en-us")]
KEYS = {SALT: "salt breeze", PATH: "winding path", TEA: "pot of tea", WOMAN: "woman",
        FISH: "twisted", TANK: "tank", BOY: "sun rose"}


@pytest.mark.slow
def test_a_long_file_is_transcribed_window_by_window_without_seams(tmp_path: Path) -> None:
    path = speech_file(tmp_path / "long.flac", LONG, seconds=100.0, sr=44100)
    transcript = transcribe_file(path, window_s=40.0)
    assert transcript.duration_s == pytest.approx(100.0, abs=1e-3)
    words = [w for s in transcript.segments for w in s.words]
    for start, text, voice in LONG:
        found = phrase_at(transcript, KEYS[text])
        assert len(found) == sum(t == text for _, t, _ in LONG), (text, found, transcript.text)
        end = sentence_end(start, text, voice)
        assert sum(start - 0.5 <= t <= end + 0.5 for t in found) == 1, (start, text, found)
        assert min(abs(w.start - start) for w in words) <= 0.5, (start, text)
    reference = sum(len(normal_words(text)) for _, text, _ in LONG)
    assert reference - 5 <= len(words) <= reference + 3, transcript.text
    assert wer(" ".join(t for _, t, _ in LONG), transcript.text) <= 0.2, transcript.text
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    spans = [(s.start, s.end) for s in transcript.segments]
    assert all(b[0] >= a[1] - 0.05 for a, b in zip(spans, spans[1:], strict=False)), spans
    assert all(0.0 <= s.start <= s.end <= 100.0 for s in transcript.segments)


@pytest.mark.slow
def test_a_channel_is_picked_or_the_channels_are_mixed(tmp_path: Path) -> None:
    left = render([(0.5, SALT, "en-us")], 6.0, seed=1)
    right = render([(2.5, PATH, "en-gb")], 6.0, seed=2)
    from scipy import signal

    stereo = signal.resample_poly(np.stack([left, right], axis=1), 3, 1, axis=0)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo.astype(np.float32), 48000)
    first = transcribe_file(path, channel=0)
    second = transcribe_file(path, channel=1)
    assert wer(SALT, first.text) <= 0.15 and "winding" not in first.text.lower(), first.text
    assert wer(PATH, second.text) <= 0.15 and "salt" not in second.text.lower(), second.text
    assert phrase_at(second, "winding")[0] == pytest.approx(2.5 + 0.3, abs=0.8)
    mixed = transcribe_file(path).text.lower()
    assert "salt" in mixed and "winding" in mixed, mixed
    with pytest.raises(ParameterError) as exc:
        transcribe_file(path, channel=2)
    assert exc.value.errors == [
        "channel must be below 2 (stereo.wav has 2 channels), not 2"]


def test_bad_parameters_are_all_named_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ParameterError) as exc:
        transcribe_file(tmp_path / "absent.wav", channel=-1, language="", window_s=5,
                        beam_size=0)
    assert [e.split()[0] for e in exc.value.errors] == [
        "channel", "language", "window_s", "beam_size"]


def test_an_unknown_language_is_refused(two_sentences: tuple[Path, list[Placement]]) -> None:
    with pytest.raises(ParameterError, match="language 'xx'"):
        transcribe_file(two_sentences[0], language="xx")


def test_audio_without_speech_gives_no_segments_and_no_language(tmp_path: Path) -> None:
    path = speech_file(tmp_path / "quiet.wav", [], seconds=8.0)
    fractions: list[float] = []
    transcript = transcribe_file(path, progress=fractions.append)
    assert transcript.segments == () and transcript.text == ""
    assert (transcript.language, transcript.language_probability) == ("", 0.0)
    assert fractions[-1] == 1.0
    assert transcribe_file(path, language="en").language == "en"


class Cancelled(Exception):
    """What the DSP pool's progress callback raises to stop a job."""


@pytest.mark.slow
def test_enhanced_transcription_reports_both_parts_and_leaves_nothing(
        two_sentences: tuple[Path, list[Placement]], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    fractions: list[float] = []
    transcript = transcribe_file(two_sentences[0], enhance=True, progress=fractions.append,
                                 work_dir=work)
    assert transcript.enhanced
    assert wer(f"{SALT} {PATH}", transcript.text) <= 0.25, transcript.text
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(f < ENHANCE_SHARE for f in fractions)
    assert any(ENHANCE_SHARE < f < 1.0 for f in fractions)
    assert list(work.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [0.0, ENHANCE_SHARE + 0.01])
def test_a_cancel_from_progress_stops_and_removes_the_temporary_file(
        two_sentences: tuple[Path, list[Placement]], tmp_path: Path, stop_after: float) -> None:
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction >= stop_after:
            raise Cancelled

    with pytest.raises(Cancelled):
        transcribe_file(two_sentences[0], enhance=True, progress=progress, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert seen[-1] < 1.0
    if stop_after:
        assert seen[-1] > ENHANCE_SHARE  # the transcription part had begun
