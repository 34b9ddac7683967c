"""A take's transcript: each line once, from the device that heard it loudest.

`attribute` on synthetic segments with a levels function computed from a scene (who
speaks when, each speaker loud on their own phone and 14 dB down on the others);
`channel_levels` on real multichannel files; `transcribe_take_file` end to end on a
take of three espeak-ng voices speaking in turn, through the real engine and model.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jiwer
import numpy as np
import pytest
import soundfile as sf

from tests.support.speech import spoken
from vocalink_lab.audio.transcribe.engine import transcribe_file
from vocalink_lab.audio.transcribe.take import attribute, channel_levels, transcribe_take_file
from vocalink_lab.audio.transcribe.transcript import Segment, Transcript
from vocalink_lab.errors import ParameterError
from vocalink_lab.levels import FLOOR_DBFS

CROSS_DB = -14.0  # a speaker on another person's phone
QUIET_DB = -60.0  # a phone when nobody speaks


class scene_levels:  # noqa: N801 - used as a function
    """Levels as `channel_levels` would read them from a room where ``turns`` are spoken.

    ``turns`` are ``(start, end, speaker)``: speaker ``k`` reads 0 dB on channel ``k`` and
    `CROSS_DB` on the others, over a floor of `QUIET_DB`; a span's level is its mean power.
    ``calls`` lists the spans asked for.
    """

    def __init__(self, turns: Sequence[tuple[float, float, int]], channels: int = 3) -> None:
        self.turns, self.channels = turns, channels
        self.calls: list[tuple[float, float]] = []

    def __call__(self, start: float, end: float) -> list[float]:
        self.calls.append((start, end))
        length = max(end - start, 1e-9)
        out = []
        for c in range(self.channels):
            power = 10 ** (QUIET_DB / 10) * length
            for t0, t1, who in self.turns:
                overlap = max(0.0, min(end, t1) - max(start, t0))
                power += overlap * 10 ** ((0.0 if who == c else CROSS_DB) / 10)
            out.append(10 * math.log10(power / length))
        return out


def seg(start: float, end: float, text: str = "") -> Segment:
    return Segment(start, end, text or f"{start:g}-{end:g}", 0.9)


def spans(out: Sequence[Segment]) -> list[tuple[float, float, int | None]]:
    return [(s.start, s.end, s.channel) for s in out]


def assert_no_duplicates(out: Sequence[Segment], min_overlap: float = 0.5) -> None:
    """No two kept segments of different channels are the same speech."""
    for i, a in enumerate(out):
        for b in out[i + 1:]:
            if a.channel != b.channel:
                overlap = min(a.end, b.end) - max(a.start, b.start)
                shorter = min(a.end - a.start, b.end - b.start)
                assert overlap < min_overlap * shorter, (a, b)


# --- attribute ----------------------------------------------------------------------


def test_a_line_heard_on_three_channels_is_kept_once_from_the_loudest() -> None:
    levels = scene_levels([(1.0, 4.0, 1)])
    channels = [[seg(1.02, 3.95, "the birch canoe")],
                [seg(1.0, 4.0, "The birch canoe slid")],
                [seg(0.98, 4.1, "the birch can")]]
    out = attribute(channels, levels)
    assert len(out) == 1
    assert out[0].text == "The birch canoe slid"
    assert out[0].channel == 1
    assert out[0].level_db == pytest.approx(levels(0.98, 4.1)[1])
    assert out[0].level_db is not None and out[0].level_db > levels(0.98, 4.1)[0] + 10


def test_split_segmentation_keeps_the_winners_split() -> None:
    # One long segment on channel 0 is two on channel 1 and one again on channel 2:
    # one group, and the speaker's channel (1) gives its two lines.
    levels = scene_levels([(0.0, 2.9, 1), (3.1, 6.0, 1)])
    channels = [[seg(0.0, 6.0)], [seg(0.0, 2.9), seg(3.1, 6.0)], [seg(0.1, 6.1)]]
    out = attribute(channels, levels)
    assert spans(out) == [(0.0, 2.9, 1), (3.1, 6.0, 1)]
    # The loud channel's split, whichever it is: the long segment when it wins.
    levels0 = scene_levels([(0.0, 2.9, 0), (3.1, 6.0, 0)])
    assert spans(attribute(channels, levels0)) == [(0.0, 6.0, 0)]


def test_turns_go_each_to_its_speakers_device() -> None:
    turns = [(0.0, 2.0, 0), (3.0, 5.0, 1), (6.0, 8.0, 2), (9.0, 11.0, 0)]
    levels = scene_levels(turns)
    # Every phone transcribes every turn, with its own boundaries.
    channels = [[seg(t0 + 0.05 * c, t1 - 0.03 * c) for t0, t1, _ in turns] for c in range(3)]
    out = attribute(channels, levels)
    assert [s.channel for s in out] == [0, 1, 2, 0]
    assert [round(s.start) for s in out] == [0, 3, 6, 9]
    assert_no_duplicates(out)


def test_a_long_conversation_with_crosstalk_is_not_chained() -> None:
    # 40 turns, each phone's segments running 0.4 s into the next turn (loose ends,
    # crosstalk): weak overlaps everywhere, and still one group per turn.
    rng = random.Random(7)
    turns, t = [], 0.0
    for k in range(40):
        length = rng.uniform(1.5, 4.0)
        turns.append((t, t + length, k % 3))
        t += length + 0.1
    levels = scene_levels(turns)
    channels = [[seg(t0 - rng.uniform(0, 0.2), t1 + 0.4) for t0, t1, _ in turns]
                for _ in range(3)]
    out = attribute(channels, levels)
    assert [s.channel for s in out] == [who for _, _, who in turns]
    assert len(levels.calls) == len(turns)


def test_a_monologue_split_differently_stays_with_its_speaker_and_stops_there() -> None:
    # Speaker 0 talks for 30 s; the three phones split it every 5, 7.5 and 6 s. Then
    # speaker 2 answers; channel 1's last segment runs 0.4 s into the answer.
    turns = [(0.0, 30.0, 0), (30.2, 34.0, 2)]
    levels = scene_levels(turns)
    ch0 = [seg(5.0 * k, 5.0 * k + 4.9) for k in range(6)] + [seg(30.1, 34.1)]
    ch1 = [seg(7.5 * k, 7.5 * k + 7.4) for k in range(3)] + [seg(22.5, 30.6)]
    ch2 = [seg(6.0 * k + 0.1, 6.0 * k + 6.0) for k in range(5)] + [seg(30.2, 34.0)]
    out = attribute([ch0, ch1, ch2], levels)
    assert spans(out) == [(5.0 * k, 5.0 * k + 4.9, 0) for k in range(6)] + [(30.2, 34.0, 2)]
    assert_no_duplicates(out)
    # No group runs from the monologue into the answer: every span measured is one
    # or the other.
    calls = levels.calls
    assert all(end <= 30.6 or start >= 30.1 for start, end in calls)
    assert (30.1, 34.1) in calls


def test_a_line_cut_differently_is_not_kept_twice() -> None:
    # Channel 1 cut speaker 0's speech at other places than channel 0: its 3-6 s
    # segment overlaps each of channel 0's by a third only, but they cover two thirds
    # of it between them.
    levels = scene_levels([(0.0, 4.0, 0), (5.0, 9.0, 0)], channels=2)
    out = attribute([[seg(0.0, 4.0), seg(5.0, 9.0)], [seg(3.0, 6.0), seg(6.5, 9.0)]],
                    levels)
    assert spans(out) == [(0.0, 4.0, 0), (5.0, 9.0, 0)]


def test_a_segment_heard_on_one_channel_only_is_kept() -> None:
    levels = scene_levels([(0.0, 2.0, 0), (5.0, 6.0, 2)])
    out = attribute([[seg(0.0, 2.0)], [], [seg(5.0, 6.0)]], levels)
    assert spans(out) == [(0.0, 2.0, 0), (5.0, 6.0, 2)]


def test_a_line_the_loud_phone_missed_is_kept_from_a_quieter_one() -> None:
    # Speaker 0 says three sentences; channel 0's voice detection dropped the middle
    # one, channel 1 (14 dB down) has all three. Keep the middle from channel 1: losing
    # speech is worse than a less certain attribution.
    turns = [(0.0, 2.0, 0), (3.0, 5.0, 0), (6.0, 8.0, 0)]
    levels = scene_levels(turns)
    ch0 = [seg(0.0, 2.0), seg(6.0, 8.0)]
    ch1 = [seg(0.0, 2.0), seg(3.0, 5.0), seg(6.0, 8.0)]
    out = attribute([ch0, ch1, []], levels)
    assert spans(out) == [(0.0, 2.0, 0), (3.0, 5.0, 1), (6.0, 8.0, 0)]
    assert out[1].level_db == pytest.approx(CROSS_DB, abs=0.1)


def test_equal_levels_go_to_the_lowest_channel_whatever_the_order() -> None:
    def flat(start: float, end: float) -> list[float]:
        return [-20.0, -20.0, -20.0]

    channels = [[seg(1.0, 3.0, "b")], [seg(0.9, 3.1, "a")], [seg(1.1, 2.9, "c")]]
    assert [s.text for s in attribute(channels, flat)] == ["b"]
    # The present channels only: channel 0 has nothing here.
    assert [s.channel for s in attribute([[], channels[1], channels[2]], flat)] == [1]
    # The order the segments come in does not matter.
    shuffled = [[seg(4.0, 5.0), seg(1.0, 3.0)], [seg(0.9, 3.1), seg(4.1, 5.0)], []]
    again = [[seg(1.0, 3.0), seg(4.0, 5.0)], [seg(4.1, 5.0), seg(0.9, 3.1)], []]
    assert attribute(shuffled, flat) == attribute(again, flat)
    assert spans(attribute(shuffled, flat)) == [(1.0, 3.0, 0), (4.0, 5.0, 0)]


def test_a_segment_across_two_turns_never_duplicates() -> None:
    # Channel 2 (nobody's own) merged two turns into one segment: the group holds both
    # turns (the known limit), and still no speech comes out twice.
    turns = [(0.0, 3.0, 0), (3.5, 6.5, 1)]
    levels = scene_levels(turns)
    channels = [[seg(0.0, 3.0), seg(3.5, 6.5)], [seg(0.0, 3.0), seg(3.5, 6.5)],
                [seg(0.0, 6.5)]]
    out = attribute(channels, levels)
    assert_no_duplicates(out)
    assert len({s.channel for s in out}) == 1
    assert len(out) == 2


def test_instants_and_empty_input() -> None:
    levels = scene_levels([(1.0, 2.0, 1)])
    assert attribute([], levels) == []
    assert attribute([[], [], []], levels) == []
    assert levels.calls == []
    # A zero-length segment inside another channel's segment is the same speech.
    out = attribute([[seg(1.5, 1.5)], [seg(1.0, 2.0)], []], levels)
    assert spans(out) == [(1.0, 2.0, 1)]


def test_the_input_is_kept_as_it_was_apart_from_channel_and_level() -> None:
    levels = scene_levels([(0.0, 2.0, 1)], channels=2)
    mine = Segment(0.0, 2.0, "hello", 0.7, device_id="dev-b", device_name="Bob's phone",
                   recording_id="r2")
    out = attribute([[seg(0.0, 2.0)], [mine]], levels)
    assert out[0].device == "Bob's phone"
    assert (out[0].recording_id, out[0].text, out[0].confidence) == ("r2", "hello", 0.7)
    assert out[0].channel == 1 and out[0].level_db is not None


def test_bad_parameters_are_refused() -> None:
    levels = scene_levels([(0.0, 1.0, 0)], channels=2)
    with pytest.raises(ParameterError, match="min_overlap"):
        attribute([[seg(0, 1)]], levels, min_overlap=0.0)
    with pytest.raises(ParameterError, match="2 values for 3 channels"):
        attribute([[seg(0, 1)], [], []], levels)


# --- channel_levels -----------------------------------------------------------------


def tone(seconds: float, sr: int, amplitude: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_channel_levels_reads_each_channel_of_a_span(tmp_path: Path) -> None:
    sr = 16000
    loud = np.concatenate([tone(1.0, sr, 0.5), np.zeros(2 * sr, np.float32)])
    quiet = tone(3.0, sr, 0.05, freq=300.0)
    x = np.stack([loud, np.zeros_like(loud), quiet])
    path = tmp_path / "take.wav"
    sf.write(path, x.T, sr, subtype="FLOAT")
    levels = channel_levels(path)
    sine = 20 * math.log10(1 / math.sqrt(2))  # a sine's RMS re its peak
    first = levels(0.0, 1.0)
    assert first == pytest.approx([20 * math.log10(0.5) + sine, FLOOR_DBFS,
                                   20 * math.log10(0.05) + sine], abs=0.05)
    assert levels(1.0, 3.0)[0] == FLOOR_DBFS
    assert levels(2.0, 3.0)[2] == pytest.approx(first[2], abs=0.05)
    assert levels(5.0, 6.0) == [FLOOR_DBFS] * 3  # past the end
    assert levels(0.5003, 0.5003)[0] > -60  # an instant reads the sample it falls on


def test_channel_levels_over_many_blocks_equals_numpy(tmp_path: Path) -> None:
    sr = 48000
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 10 * sr)) * np.array([[0.1], [0.01], [0.3]]))
    x = np.clip(x, -1, 1).astype(np.float32)
    path = tmp_path / "take.flac"
    sf.write(path, x.T, sr, subtype="PCM_24")
    decoded, _ = sf.read(path, dtype="float32", always_2d=True)
    a, b = round(1.3 * sr), round(8.7 * sr)  # spans several of its 65536-frame blocks
    want = [10 * math.log10(float(np.mean(np.square(decoded[a:b, c], dtype=np.float64))))
            for c in range(3)]
    assert channel_levels(path)(1.3, 8.7) == pytest.approx(want, abs=1e-6)


def test_transcribe_take_file_checks_its_tracks_first(tmp_path: Path) -> None:
    path = tmp_path / "take.wav"
    sf.write(path, np.zeros((1600, 2), np.float32), 16000)
    tracks = [{"recording_id": "r1", "device_id": "dev-a", "device_name": "A"}, {}]
    with pytest.raises(ParameterError) as caught:
        transcribe_take_file(path, tracks[:1] + tracks, offset_s=math.nan)
    assert caught.value.errors == ["offset_s must be a finite number, not nan",
                                   "tracks has 3 entries for a file of 2 channels",
                                   "tracks[2] lacks recording_id, device_id, device_name"]


# --- transcribe_take_file: three phones, three voices, in turn ---------------------------

SR = 16000
VOICES = ("en-us", "en-gb+f3", "en-gb-scotland")
#: Two Harvard sentences per speaker, spoken in turn (0, 1, 2, 0, 1, 2): ones whisper
#: base gets (nearly) right from these voices.
SENTENCES = (
    "The hogs were fed chopped corn and garbage.",
    "A rod is used to catch pink salmon.",
    "Help the woman get back to her feet.",
    "It snowed, rained, and hailed the same morning.",
    "Take the winding path to reach the lake.",
    "The salt breeze came across from the sea.",
)
TRACKS = tuple({"recording_id": f"rec-{d}", "device_id": f"dev-{d}", "device_name": name}
               for d, name in zip("abc", ("Alice's phone", "Bob's phone", "Cara's phone"),
                                  strict=True))
OFFSET_S = 2.5  # where the aligned file starts on the take's timeline
MATCH_WER = 0.4  # a line group "is" a sentence at or below this word error rate



class Take(NamedTuple):
    path: Path
    turns: list[tuple[float, float, int]]  # voiced start, end (s in the file), speaker
    duration_s: float


def make_take(path: Path) -> Take:
    """Three phones, each by its own speaker: that speaker at full level, the others
    14 dB down and a few ms late (further away), over a faint noise floor."""
    clips = [spoken(text, VOICES[k % 3]) for k, text in enumerate(SENTENCES)]
    placed, turns, t = [], [], 0.5
    for k, clip in enumerate(clips):
        placed.append(t)
        # The turn is where the voice is: espeak-ng pads its clips with silence.
        voiced = np.flatnonzero(np.abs(clip) > 0.01)
        turns.append((t + voiced[0] / SR, t + (voiced[-1] + 1) / SR, k % 3))
        t += clip.size / SR + 1.0  # a second's pause between turns
    x = np.zeros((3, round((t + 0.5) * SR)), np.float32)
    for start, (_, _, speaker), clip in zip(placed, turns, clips, strict=True):
        for device in range(3):
            delay = 0 if device == speaker else round(0.004 * SR * (1 + abs(device - speaker)))
            gain = 1.0 if device == speaker else 10 ** (CROSS_DB / 20)
            at = round(start * SR) + delay
            x[device, at:at + clip.size] += gain * clip
    x += (0.002 * np.random.default_rng(5).standard_normal(x.shape)).astype(np.float32)
    sf.write(path, x.T, SR, subtype="PCM_16")
    return Take(path, turns, x.shape[1] / SR)


def wer(reference: str, hypothesis: str) -> float:
    norm = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(),
                          jiwer.RemoveMultipleSpaces(), jiwer.Strip(),
                          jiwer.ReduceToListOfListOfWords()])
    return float(jiwer.wer(reference, hypothesis or "-", reference_transform=norm,
                           hypothesis_transform=norm))


@pytest.fixture(scope="module")
def take(tmp_path_factory: pytest.TempPathFactory) -> Take:
    return make_take(tmp_path_factory.mktemp("take") / "aligned.wav")


@pytest.fixture(scope="module")
def transcribed(take: Take) -> tuple[Transcript, list[float]]:
    seen: list[float] = []
    result = transcribe_take_file(take.path, TRACKS, take_id="take-1", origin_at=1700.0,
                                  offset_s=OFFSET_S, progress=seen.append)
    return result, seen


def turn_lines(result: Transcript, take: Take) -> list[list[Segment]]:
    """The lines of each turn: those that overlap it on the take's timeline."""
    return [[s for s in result.segments
             if s.start < end + OFFSET_S and s.end > start + OFFSET_S]
            for start, end, _ in take.turns]


@pytest.mark.slow
def test_each_sentence_is_one_line_group_from_its_speakers_phone(
        take: Take, transcribed: tuple[Transcript, list[float]]) -> None:
    result, _ = transcribed
    groups = turn_lines(result, take)
    assert sum(map(len, groups)) == len(result.segments)  # no line outside the turns
    for k, (lines, sentence) in enumerate(zip(groups, SENTENCES, strict=True)):
        device = TRACKS[take.turns[k][2]]
        assert lines, f"turn {k} ({sentence!r}) has no line"
        assert {(s.device_id, s.device_name, s.recording_id, s.channel) for s in lines} == {
            (device["device_id"], device["device_name"], device["recording_id"],
             take.turns[k][2])}, lines
        # The sentence is in this turn's lines, and in no other turn's.
        texts = [" ".join(s.text for s in group) for group in groups]
        rates = [wer(sentence, text) for text in texts]
        assert rates[k] <= MATCH_WER, (sentence, texts[k])
        assert [r <= MATCH_WER for r in rates].count(True) == 1, (sentence, texts)
    # No speech twice: lines of different devices never overlap in time.
    for i, a in enumerate(result.segments):
        for b in result.segments[i + 1:]:
            if a.device_id != b.device_id:
                assert min(a.end, b.end) <= max(a.start, b.start), (a, b)
    assert result.kind == "take" and result.subject_id == "take-1"
    assert result.origin_at == 1700.0 and result.language == "en"
    assert result.tracks == TRACKS


@pytest.mark.slow
def test_lines_are_the_winning_channels_own(
        take: Take, transcribed: tuple[Transcript, list[float]]) -> None:
    # Each channel on its own, as transcribe_take_file runs it (the first channel's
    # language given to the others): a turn's lines are exactly what its speaker's
    # channel wrote there, as many lines, same text, same times shifted to the take.
    result, _ = transcribed
    own = [transcribe_file(take.path, channel=c, language=None if c == 0 else "en")
           for c in range(3)]
    for (start, end, speaker), lines in zip(take.turns, turn_lines(result, take),
                                            strict=True):
        want = [s for s in own[speaker].segments if s.start < end and s.end > start]
        assert [(s.text, s.start + OFFSET_S, s.end + OFFSET_S) for s in want] == [
            (s.text, s.start, s.end) for s in lines]
        assert [w.start + OFFSET_S for s in want for w in s.words] == pytest.approx(
            [w.start for s in lines for w in s.words])
        # Its level is the speaker's channel's, the loudest over the turn.
        heard = channel_levels(take.path)(start, end)
        assert all(s.level_db is not None and s.level_db > max(
            heard[c] for c in range(3) if c != speaker) for s in lines)


@pytest.mark.slow
def test_times_are_on_the_takes_timeline(
        take: Take, transcribed: tuple[Transcript, list[float]]) -> None:
    result, seen = transcribed
    for (start, end, _), lines in zip(take.turns, turn_lines(result, take), strict=True):
        first, last = lines[0].start - OFFSET_S, lines[-1].end - OFFSET_S
        # Within half a second of the voice's onset and end. Whisper stretches a line's
        # first word back into the pause before it (by up to 0.6 s here), so the onset
        # is checked at that word's end, and the line's start only loosely.
        assert abs(lines[0].words[0].end - OFFSET_S - start) <= 0.5, (start, lines[0])
        assert start - 0.8 <= first <= start + 0.5, (start, first)
        assert abs(last - end) <= 0.5, (end, last)
        assert min(last, end) - max(first, start) >= 0.7 * (end - start)
    assert result.duration_s == pytest.approx(take.duration_s, abs=0.01)
    # Progress: never back, to 1.0, every channel's share in its third.
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert all(any(c / 3 * 0.95 < f <= (c + 1) / 3 * 0.95 for f in seen) for c in range(3))


class Cancelled(Exception):
    pass


@pytest.mark.slow
def test_progress_may_raise_to_cancel(take: Take) -> None:
    seen: list[float] = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if fraction > 0.4:  # in the second channel
            raise Cancelled

    with pytest.raises(Cancelled):
        transcribe_take_file(take.path, TRACKS, language="en", progress=progress)
    assert 0.4 < seen[-1] < 2 / 3 * 0.95
