"""A held-out speech-enhancement set: espeak-ng speech in six noises, a tuning and a report part.

Speech is espeak-ng's (several English voices, male and female variants, Harvard
sentences), resampled to 16 kHz (`SR`); each clip is two sentences with a pause
between them and short silences around, about 4 to 6 s. Noises
(`vocalink_lab.audio.synth`): ``babble`` (six overlapping espeak talkers, other
voices and sentences than the clip's), ``keyboard`` (key strokes), ``fan``
(amplitude-modulated broadband noise and blade tone), ``hum`` (50 or 60 Hz and seven
harmonics, with a faint hiss), ``pink`` and ``white``, each at -5, 0, 5 and 10 dB SNR
(`SNRS`), plus clean clips.

The two parts share no voice, sentence or seed: `tuning` is what the auto mode's
constants were chosen on, `report` what the benchmark reports. Everything is
deterministic (espeak-ng is; the seeds are fixed); the speech is rendered once into a
cache directory (``$TMPDIR/vocalink-heldout-<hash>``) and reused, and a whole part is
made in a few seconds. Nothing is downloaded.

Usage: ``from _heldout import report, tuning`` (with ``benchmarks/`` on ``sys.path``),
then ``for clip in report(per_case=4): clip.noisy, clip.clean``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SR = 16000
SNRS = (-5.0, 0.0, 5.0, 10.0)
NOISES = ("babble", "keyboard", "fan", "hum", "pink", "white")
_ESPEAK_RATE = 22050

# Harvard sentences (IEEE 1969), public domain; disjoint lists per part, and for babble.
_SENTENCES = {
    "tuning": (
        "The birch canoe slid on the smooth planks.",
        "Glue the sheet to the dark blue background.",
        "It's easy to tell the depth of a well.",
        "These days a chicken leg is a rare dish.",
        "Rice is often served in round bowls.",
        "The juice of lemons makes fine punch.",
        "The box was thrown beside the parked truck.",
        "The hogs were fed chopped corn and garbage.",
        "Four hours of steady work faced us.",
        "A large size in stockings is hard to sell.",
        "The boy was there when the sun rose.",
        "A rod is used to catch pink salmon.",
    ),
    "report": (
        "The source of the huge river is the clear spring.",
        "Kick the ball straight and follow through.",
        "Help the woman get back to her feet.",
        "A pot of tea helps to pass the evening.",
        "Smoky fires lack flame and heat.",
        "The soft cushion broke the man's fall.",
        "The salt breeze came across from the sea.",
        "The girl at the booth sold fifty bonds.",
        "The small pup gnawed a hole in the sock.",
        "The fish twisted and turned on the bent hook.",
        "Press the pants and sew a button on the vest.",
        "The swan dive was far short of perfect.",
    ),
    "babble": (
        "The beauty of the view stunned the young boy.",
        "Two blue fish swam in the tank.",
        "Her purse was full of useless trash.",
        "The colt reared and threw the tall rider.",
        "It snowed, rained, and hailed the same morning.",
        "Read verse out loud for pleasure.",
        "Hoist the load to your left shoulder.",
        "Take the winding path to reach the lake.",
    ),
}
_VOICES = {
    "tuning": ("en-us", "en-gb+f3", "en-gb-scotland", "en-us+f2"),
    "report": ("en-gb", "en-us+f3", "en-gb-x-rp", "en-029+f4"),
    "babble": ("en-us+m3", "en-gb+f1", "en-gb-x-gbclan", "en-us+f5", "en-us-nyc",
               "en-gb-x-gbcwmd+f2"),
}
_SEEDS = {"tuning": 1000, "report": 2000}


@dataclass(frozen=True)
class Clip:
    """One held-out clip: the clean speech, the noisy mix and what made it."""

    part: str
    noise: str  # one of NOISES, or "clean"
    snr_db: float | None  # None for clean clips
    index: int
    clean: np.ndarray
    noisy: np.ndarray

    @property
    def name(self) -> str:
        """``noise@snr#index``, e.g. ``babble@-5#2``."""
        snr = "-" if self.snr_db is None else f"{self.snr_db:g}"
        return f"{self.noise}@{snr}#{self.index}"


def available() -> bool:
    """Whether espeak-ng is installed (the set cannot be made without it)."""
    return shutil.which("espeak-ng") is not None


def _cache_dir() -> Path:
    key = hashlib.sha256(repr((_SENTENCES, _VOICES, SR)).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"vocalink-heldout-{key}"
    path.mkdir(exist_ok=True)
    return path


def speak(text: str, voice: str) -> np.ndarray:
    """``text`` spoken by espeak-ng's ``voice`` at 160 words/min, float32 at `SR` (cached)."""
    import soundfile as sf
    from scipy import signal as sps

    name = hashlib.sha256(f"{voice}|{text}".encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}.npy"
    if path.exists():
        return np.asarray(np.load(path), dtype=np.float32)
    wav = path.with_suffix(".wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), text],
                   check=True, capture_output=True, timeout=60)
    x, rate = sf.read(wav, dtype="float64")
    wav.unlink()
    if rate != _ESPEAK_RATE:  # pragma: no cover - espeak-ng's rate is fixed
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {_ESPEAK_RATE}")
    y = sps.resample_poly(x, 320, 441).astype(np.float32)  # 22050 -> 16000 Hz
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, y)
    tmp.replace(path)  # atomic: parallel runs never read half a file
    return np.asarray(y, dtype=np.float32)


def _utterance(part: str, index: int, rng: np.random.Generator) -> np.ndarray:
    """Two sentences by one voice, a 0.3-0.7 s pause between, 0.2-0.5 s of silence around."""
    sentences, voices = _SENTENCES[part], _VOICES[part]
    voice = voices[index % len(voices)]
    first = sentences[(2 * index) % len(sentences)]
    second = sentences[(2 * index + 1) % len(sentences)]

    def silence(low: float, high: float) -> np.ndarray:
        return np.zeros(round(rng.uniform(low, high) * SR), np.float32)

    x = np.concatenate([silence(0.2, 0.5), speak(first, voice), silence(0.3, 0.7),
                        speak(second, voice), silence(0.2, 0.5)])
    return (0.3 * x / float(np.max(np.abs(x)))).astype(np.float32)


def make_noise(kind: str, frames: int, seed: int) -> np.ndarray:
    """Noise of one of `NOISES`, ``frames`` long, at RMS 0.1."""
    from vocalink_lab.audio import synth

    rng = np.random.default_rng(seed)
    if kind == "babble":
        voices = [speak(s, v) for s, v in zip(_SENTENCES["babble"], _VOICES["babble"] * 2,
                                              strict=False)]
        return synth.babble(voices, frames, seed=seed, talkers=6)
    if kind == "keyboard":
        return synth.keyboard(frames, SR, seed=seed, keys_per_s=float(rng.uniform(4, 9)))
    if kind == "fan":
        return synth.fan(frames, SR, seed=seed)
    if kind == "hum":
        base = 50.0 if seed % 2 == 0 else 60.0
        tone = synth.hum(frames / SR, SR, base_hz=base, harmonics=8, seed=seed)[:frames]
        hiss = synth.noise(frames, kind="white", seed=seed + 1, amplitude=1.0)
        tone = tone / float(np.sqrt(np.mean(np.square(tone))))
        return (0.1 * (tone + 0.03 * hiss)).astype(np.float32)
    if kind in ("pink", "white"):
        return synth.noise(frames, kind=kind, seed=seed)
    raise ValueError(f"unknown noise {kind!r}; known: {', '.join(NOISES)}")


def clips(part: str, *, per_case: int = 4, noises: Sequence[str] = NOISES,
          snrs: Sequence[float] = SNRS, clean: int | None = None) -> Iterator[Clip]:
    """The clips of ``part`` ("tuning" or "report"): ``per_case`` per noise and SNR, then clean.

    Clip ``i`` of a case has utterance ``i`` of the part (the same utterances in
    every case, so the cases differ only by their noise), and its own noise seed.
    ``clean`` clean clips (default ``per_case``) come last.
    """
    if part not in _SEEDS:
        raise ValueError(f"part must be 'tuning' or 'report', not {part!r}")
    base = _SEEDS[part]
    speech = [_utterance(part, i, np.random.default_rng(base + i)) for i in
              range(max(per_case, clean if clean is not None else per_case))]
    for k, kind in enumerate(noises):
        for j, snr in enumerate(snrs):
            for i in range(per_case):
                seed = base + 100 * (k + 1) + 10 * j + i
                x = speech[i]
                noisy = _mix(x, make_noise(kind, x.size, seed), snr)
                # Keep the peak under full scale (keyboard at -5 dB goes past it); SI-SDR
                # and STOI are scale-invariant, so both are scaled alike.
                scale = min(1.0, 0.95 / float(np.max(np.abs(noisy))))
                yield Clip(part, kind, snr, i, x * np.float32(scale),
                           noisy * np.float32(scale))
    for i in range(per_case if clean is None else clean):
        yield Clip(part, "clean", None, i, speech[i], speech[i].copy())


def _mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    from vocalink_lab.audio import synth

    return synth.mix_at_snr(clean, noise, snr_db)


def tuning(**kwargs: object) -> Iterator[Clip]:
    """The tuning part (see `clips`)."""
    return clips("tuning", **kwargs)  # type: ignore[arg-type]


def report(**kwargs: object) -> Iterator[Clip]:
    """The report part (see `clips`)."""
    return clips("report", **kwargs)  # type: ignore[arg-type]
