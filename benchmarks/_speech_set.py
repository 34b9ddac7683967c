"""A held-out speech set with known text, for word error rates: espeak-ng clips, clean and noisy.

Each clip is two or three Harvard sentences (IEEE 1969, public domain; lists 4 to 10,
none of the sentences `_heldout` speaks or babbles) read by one espeak-ng voice
(`_heldout.speak`: 160 words/min, 16 kHz), with pauses of 0.3-0.8 s between sentences
and 0.3-0.6 s of silence around: about 6 to 12 s. Six voices, none of them a voice of
`_heldout`'s tuning part or of its babble (the auto enhancement's constants were fitted
on the tuning part). Utterance ``i`` is made once and used twice: clean, and mixed at
10 dB SNR (`SNR_DB`, `_heldout._mix`) with one of `_heldout.NOISES` (babble, keyboard,
fan, hum, pink, white: utterance ``i`` gets noise ``(i + i // 6) % 6``, so every voice
meets several noises), with its own seed. Everything is deterministic; nothing is
downloaded.

`long_file` writes the long recordings of the memory test: the clean utterances in
turn, one every `LONG_PERIOD_S` seconds, over quiet pink noise (40 dB below the speech),
a minute at a time (the writer's memory does not grow with the length).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _heldout import NOISES, SR, _mix, make_noise, speak

SNR_DB = 10.0
#: One utterance every this many seconds in `long_file`.
LONG_PERIOD_S = 25.0
_SEED = 5000

# Harvard sentences, lists 4 to 10, without those `_heldout` uses and without the ones
# whose spelling is a matter of taste (``side show``, ``half way``, ``drug store``,
# ``snow drifts``, ``rosebush``): one word written as two would count as an error.
SENTENCES = (
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.",
    "Mesh wire keeps chicks inside.",
    "The frosty air passed through the coat.",
    "The crooked maze failed to fool the mouse.",
    "Adding fast leads to wrong sums.",
    "The show was a flop from the very start.",
    "A saw is a tool used for making boards.",
    "The wagon moved on well oiled wheels.",
    "March the soldiers past the next hill.",
    "A cup of sugar makes sweet fudge.",
    "Both lost their lives in the raging storm.",
    "Use a pencil to write the first draft.",
    "The clock struck to mark the third period.",
    "A small creek cut across the field.",
    "The set of china hit the floor with a crash.",
    "This is a grand season for hikes on the road.",
    "The dune rose from the edge of the water.",
    "Those words were the cue for the actor to leave.",
    "A yacht slid around the point into the bay.",
    "The two met while playing on the sand.",
    "The ink stain dried on the finished page.",
    "The walled town was seized without a fight.",
    "The lease ran out in sixteen weeks.",
    "A tame squirrel makes a nice pet.",
    "The horn of the car woke the sleeping cop.",
    "The heart beat strongly and with firm strokes.",
    "The pearl was worn in a thin silver ring.",
    "The fruit peel was cut in thick slices.",
    "The Navy attacked the big task force.",
    "See the cat glaring at the scared mouse.",
    "There are more than two factors here.",
    "The hat brim was wide and too droopy.",
    "The lawyer tried to lose his case.",
    "The grass curled around the fence post.",
    "Cut the pie into large parts.",
    "Men strive but seldom get rich.",
    "Always close the barn door tight.",
    "He lay prone and hardly moved a limb.",
    "The slush lay deep along the street.",
    "A wisp of cloud hung in the blue air.",
    "A pound of sugar costs more than eggs.",
    "The fin was sharp and cut the clear water.",
    "The play seems dull and quite stupid.",
    "Bail the boat to stop it from sinking.",
    "The term ended in late June that year.",
    "A tusk is used to make costly gifts.",
    "Ten pins were set in order.",
    "The bill was paid every third week.",
)
#: Three male and three female; of the variants tried, the ones whisper "base" reads best
#: (espeak-ng's en-029 and West Midlands voices, say, come out half wrong even when clean).
VOICES = ("en-gb-x-rp", "en-us+f1", "en-us+m5", "en-gb+f4", "en-us+m1", "en-gb+f2")


@dataclass(frozen=True)
class Utterance:
    index: int
    voice: str
    sentences: tuple[str, ...]
    audio: np.ndarray  # float32 at SR, peak 0.3

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


@dataclass(frozen=True)
class Clip:
    """One file of the set: an utterance, clean or in noise."""

    utterance: Utterance
    noise: str  # one of _heldout.NOISES, or "clean"
    audio: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.utterance.index:02d}-{self.noise}"

    @property
    def text(self) -> str:
        return self.utterance.text

    @property
    def noisy(self) -> bool:
        return self.noise != "clean"


def utterances(count: int) -> list[Utterance]:
    """The first ``count`` utterances: 2, 3, 2, 3... sentences, the list in order (wrapping)."""
    out = []
    next_sentence = 0
    for i in range(count):
        rng = np.random.default_rng(_SEED + i)
        n = 2 + i % 2
        sentences = tuple(SENTENCES[(next_sentence + k) % len(SENTENCES)] for k in range(n))
        next_sentence += n
        voice = VOICES[i % len(VOICES)]
        parts = [_silence(rng, 0.3, 0.6)]
        for k, sentence in enumerate(sentences):
            if k:
                parts.append(_silence(rng, 0.3, 0.8))
            parts.append(speak(sentence, voice))
        parts.append(_silence(rng, 0.3, 0.6))
        x = np.concatenate(parts)
        out.append(Utterance(i, voice, sentences,
                             (0.3 * x / float(np.max(np.abs(x)))).astype(np.float32)))
    return out


def clips(count: int) -> list[Clip]:
    """``count`` utterances, each clean and at `SNR_DB` in its noise: ``2 * count`` clips."""
    said = utterances(count)
    out = [Clip(u, "clean", u.audio) for u in said]
    for u in said:
        kind = NOISES[(u.index + u.index // len(NOISES)) % len(NOISES)]
        noisy = _mix(u.audio, make_noise(kind, u.audio.size, _SEED + 1000 + u.index), SNR_DB)
        noisy = noisy * np.float32(min(1.0, 0.95 / float(np.max(np.abs(noisy)))))
        out.append(Clip(u, kind, noisy.astype(np.float32)))
    return out


def write_clips(folder: Path, items: Sequence[Clip]) -> list[Path]:
    """Each clip as a 16-bit mono WAV at `SR` in ``folder``; their paths."""
    import soundfile as sf

    paths = []
    for clip in items:
        path = folder / f"{clip.name}.wav"
        sf.write(path, clip.audio, SR, subtype="PCM_16")
        paths.append(path)
    return paths


def long_file(path: Path, minutes: float, said: Sequence[Utterance]) -> str:
    """A ``minutes``-long 16-bit WAV: ``said`` in turn every `LONG_PERIOD_S` s; its text."""
    from vocalink_lab.audio import AudioWriter, synth

    frames = round(minutes * 60 * SR)
    period = round(LONG_PERIOD_S * SR)
    block = 60 * SR
    texts = []
    placed: list[tuple[int, np.ndarray]] = []  # (start frame, audio)
    for k, start in enumerate(range(period // 2, frames, period)):
        u = said[k % len(said)]
        if start + u.audio.size > frames:
            break
        placed.append((start, u.audio))
        texts.append(u.text)
    with AudioWriter(path, SR, 1, subtype="PCM_16") as writer:
        for b, begin in enumerate(range(0, frames, block)):
            n = min(block, frames - begin)
            # Speech peaks at 0.3 (RMS about 0.06); pink noise at RMS 0.0006: 40 dB below.
            x = 0.006 * synth.noise(n, kind="pink", seed=_SEED + 7000 + b)
            for start, audio in placed:
                lo, hi = max(start, begin), min(start + audio.size, begin + n)
                if lo < hi:
                    x[lo - begin:hi - begin] += audio[lo - start:hi - start]
            writer.write(x.astype(np.float32))
    return " ".join(texts)


def _silence(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    return np.zeros(round(rng.uniform(low, high) * SR), np.float32)


# -- word error rate -------------------------------------------------------------------------

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def _spoken(n: int) -> str:
    """An integer as espeak-ng says it (British style: "one hundred and five")."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand"),
                       (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            tail = "" if rest == 0 else (" and " if rest < 100 else " ") + _spoken(rest)
            return f"{_spoken(head)} {name}{tail}"
    raise AssertionError(n)  # pragma: no cover


def normalise(text: str) -> str:
    """Lower case, numbers as words, no punctuation (but apostrophes inside words)."""
    text = text.lower().replace("%", " percent")
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text)  # 1,000 -> 1000
    text = re.sub(r"\d+", lambda m: " " + _spoken(int(m.group())) + " ", text)
    text = re.sub(r"[-\u2010-\u2015/]", " ", text)  # well-oiled -> well oiled
    text = re.sub(r"[\u2018\u2019`]", "'", text)
    text = re.sub(r"[^a-z' ]+", " ", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())
