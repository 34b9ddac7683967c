"""Speech with known text for the transcription tests: espeak-ng voices, as WAV bytes.

Rendered by the held-out set's `speak` (``benchmarks/_heldout.py``: espeak-ng at 16 kHz,
cached), so tests and the benchmark hear the same voices. Without espeak-ng the tests
that need speech fail with the install hint (``scripts/test.sh`` installs it).
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["SENTENCES", "SR", "Placement", "conversation", "render", "speech", "speech_file",
           "speech_wav", "spoken", "wav_bytes", "word_error_rate"]

SR = 16_000
#: Harvard sentences (IEEE 1969, public domain) none of the held-out set's parts use.
SENTENCES = (
    "The stale smell of old beer lingers.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
)


def _heldout() -> object:
    bench = str(Path(__file__).resolve().parents[2] / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import _heldout

    if not _heldout.available():
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng "
                           "(scripts/test.sh installs it)")
    return _heldout


def speech(sentences: Sequence[str], voice: str = "en-us", *, gap_s: float = 0.8,
           lead_s: float = 0.5) -> np.ndarray:
    """``sentences`` spoken in turn by one voice, ``gap_s`` apart; float32 at `SR`."""
    heldout = _heldout()
    parts = [np.zeros(int(lead_s * SR), np.float32)]
    for text in sentences:
        parts += [heldout.speak(text, voice), np.zeros(int(gap_s * SR), np.float32)]  # type: ignore[attr-defined]
    return np.concatenate(parts).astype(np.float32)


def speech_wav(sentences: Sequence[str], voice: str = "en-us", **kwargs: float) -> bytes:
    """`speech` as the bytes of a 16-bit WAV file."""
    return wav_bytes(speech(sentences, voice, **kwargs))


#: A sentence placed in a recording: (onset in s, sentence, espeak-ng voice).
Placement = tuple[float, str, str]


def spoken(text: str, voice: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, float32 at `SR`, peak 0.3, leading silence trimmed."""
    x = _heldout().speak(text, voice)  # type: ignore[attr-defined]
    x = 0.3 * x / float(np.max(np.abs(x)))
    onset = int(np.argmax(np.abs(x) > 0.01))  # so that a placement's time is the onset
    return np.asarray(x[onset:], dtype=np.float32)


def render(placements: Sequence[Placement], seconds: float, *, seed: int = 0) -> np.ndarray:
    """Sentences placed at their onsets over a faint white-noise floor, 16 kHz mono."""
    rng = np.random.default_rng(seed)
    x = (0.002 * rng.standard_normal(round(seconds * SR))).astype(np.float32)
    for start, text, voice in placements:
        voice_x = spoken(text, voice)
        i = round(start * SR)
        assert i + voice_x.size <= x.size, f"{text!r} does not fit"
        x[i:i + voice_x.size] += voice_x
    return x


def speech_file(path: Path, placements: Sequence[Placement], *, seconds: float,
                sr: int = SR) -> Path:
    """`render` written to ``path`` at ``sr``."""
    x = render(placements, seconds)
    if sr != SR:
        from scipy import signal

        x = signal.resample_poly(x, sr, SR).astype(np.float32)
    sf.write(path, x, sr)
    return path


def word_error_rate(reference: str, hypothesis: str) -> float:
    """jiwer's WER after lowercasing and dropping punctuation on both sides."""
    import jiwer

    def norm(text: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())

    return float(jiwer.wer(norm(reference), norm(hypothesis)))


def conversation(turns: Sequence[tuple[int, str]], voices: Sequence[str], *,
                 bleed_db: float = -14.0, gap_s: float = 1.0, noise_db: float = -60.0,
                 seed: int = 0) -> tuple[list[np.ndarray], list[tuple[int, str, float, float]]]:
    """A room where people speak in turn, as each one's own microphone hears it.

    Parameters
    ----------
    turns : sequence of (speaker, sentence)
        Who says what, in order; speaker ``k`` speaks with ``voices[k]`` into device ``k``.
    voices : sequence of str
        espeak-ng voices, one per speaker (and device).
    bleed_db : float
        How loud a speaker is on the other devices' microphones (they are further away),
        each also a few milliseconds later.
    gap_s, noise_db, seed
        The pause between turns; a faint noise floor on every microphone.

    Returns
    -------
    tracks : list of ndarray
        One float32 track per device, all the same length, at `SR`.
    placed : list of (speaker, sentence, start_s, end_s)
        Where each turn is.
    """
    heldout = _heldout()
    rng = np.random.default_rng(seed)
    said = [heldout.speak(text, voices[who]) for who, text in turns]  # type: ignore[attr-defined]
    placed, t = [], 0.5
    for (who, text), audio in zip(turns, said, strict=True):
        placed.append((who, text, t, t + len(audio) / SR))
        t += len(audio) / SR + gap_s
    frames = int((t + 0.5) * SR)
    tracks = [rng.normal(0, 10 ** (noise_db / 20), frames).astype(np.float32)
              for _ in voices]
    bleed = 10 ** (bleed_db / 20)
    for (who, _, start, _), audio in zip(placed, said, strict=True):
        for device in range(len(voices)):
            delay = 0 if device == who else int(SR * 0.003 * (1 + abs(device - who)))
            at = int(start * SR) + delay
            gain = 1.0 if device == who else bleed
            tracks[device][at:at + len(audio)] += gain * audio
    return tracks, placed


def wav_bytes(audio: np.ndarray) -> bytes:
    """A float32 track at `SR` as the bytes of a 16-bit WAV file."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1, 1), SR, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
