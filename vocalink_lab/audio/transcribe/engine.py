"""Transcribe a recording with faster-whisper, window by window, in bounded memory.

The file is decoded in blocks (`AudioReader`), mixed down (or one channel picked) and
resampled to 16 kHz mono with a streaming soxr resampler, and gathered into windows
of up to ``window_s`` seconds. Each window ends at the quietest 150 ms within its last
10 s, so that no word is cut in two; what follows the cut starts the next window.
Memory does not grow with the recording's length, only with the window's: the samples
(64 KB/s) and faster-whisper's features are small, but its Silero VAD runs a whole
window as one batch, about 1 MB per second of window. With the default 120 s windows
a worker peaks at about 530 to 580 MB (the model itself about 350 MB, loaded once per
process, see `model.load_model`); 300 s windows would peak near 670 MB. Longer windows
read better where speech is sparse: the VAD joins the speech of a whole window before
whisper reads it in 30 s chunks, so a chunk holds more context (an utterance every
25 s over 10 minutes: 14.2 % WER with 30 s windows, 11.6 % with 60 s, 10.1 % with
120 s, 9.3 % for the whole file at once, which holds all of it in memory). After each
window, the heap it freed is given back (`_give_back_freed_memory`).

The language is detected on the first window with speech and kept for the rest;
each window's segments and words are moved onto the recording's timeline.

Everything blocks: run it in the DSP pool, not on an event loop. ``progress`` is
called at least once per segment; whatever it raises (the pool's cancellation)
stops the work and propagates, and the temporary enhanced file is removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import ParameterError
from ...progress import Progress, span
from ..io import AudioReader
from .model import ModelSource, engine_label, load_model, require_engine
from .transcript import Segment, Transcript, Word

__all__ = ["BEAM_SIZE", "ENHANCE_SHARE", "MIN_WINDOW_S", "SAMPLE_RATE", "WINDOW_S",
           "transcribe_file"]

#: faster-whisper's input rate (Hz).
SAMPLE_RATE = 16000
#: Seconds of audio transcribed at a time: about 120 MB transient (the VAD's batch, see
#: above), and a seam, cut in a pause, every two minutes.
WINDOW_S = 120.0
#: The shortest window: it must leave room for the seam search and hold whole sentences.
MIN_WINDOW_S = 20.0
#: Beam search width. On one core (base, int8, 60 s of espeak-ng speech) a beam of 5 ran
#: at a real-time factor of 0.15-0.17 with 28 % WER, greedy decoding (1) at 0.11 with
#: 34 %: the beam costs 1.5x the time, well within the 0.3 budget, for fewer errors.
BEAM_SIZE = 5
#: The part of ``progress`` that enhancement takes when ``enhance=True``: on one core the
#: auto mode took about as long as transcribing (9 s and 9 s for 60 s of speech).
ENHANCE_SHARE = 0.5

_SEAM_SEARCH_S = 10.0  # a window's cut is searched in its last seconds
_SEAM_FRAME_S = 0.15  # the quietest frame of this length is where it is cut
_SEAM_HOP_S = 0.01
_READ_BLOCK_S = 5.0

Mono = npt.NDArray[np.float32]


def transcribe_file(path: Path | str, *, channel: int | None = None,
                    language: str | None = None, model: str | Path | None = None,
                    enhance: bool = False, window_s: float = WINDOW_S,
                    beam_size: int = BEAM_SIZE, vad: bool = True,
                    progress: Progress | None = None,
                    work_dir: Path | None = None) -> Transcript:
    """Transcribe an audio file into timed segments and words.

    Parameters
    ----------
    path : Path or str
        Any format `AudioReader` decodes, at any rate.
    channel : int, optional
        The channel to transcribe (0-based); default the mean of all channels.
    language : str, optional
        ISO 639-1 code (``"en"``); default detected on the first window with speech.
    model : str or Path, optional
        A faster-whisper model folder; default ``$VOCALINK_ASR_MODEL``, else the
        packaged whisper base (see `model.locate_model`).
    enhance : bool, default False
        Enhance the audio first (`enhance.enhance_file`, auto mode) into a temporary
        file in ``work_dir``, removed afterwards whatever happens.
    window_s : float, default `WINDOW_S`
        Longest stretch transcribed at once (s), at least `MIN_WINDOW_S`.
    beam_size : int, default `BEAM_SIZE`
        Beam search width (1 is greedy decoding).
    vad : bool, default True
        Skip what Silero VAD finds is not speech (faster-whisper's ``vad_filter``):
        faster, and no text is invented for silence or noise.
    progress : callable, optional
        ``progress(fraction)``, 0 to 1, non-decreasing, at least once per segment and
        1.0 at the end. What it raises propagates (the work stops).
    work_dir : Path, optional
        Where the enhanced temporary file goes (default the system's temporary folder).

    Returns
    -------
    Transcript
        ``kind="recording"``, segments in time order (seconds from the file's start),
        ``duration_s`` the file's length. ``language`` is ``""`` (probability 0) when
        no language was given and no speech was found.

    Raises
    ------
    ParameterError
        Every bad parameter, named (a channel the file does not have, a language the
        model does not know...), before any work starts.
    TranscriptionUnavailable
        faster-whisper or the model is missing or corrupt (see `model.load_model`).
    AudioFormatError
        The file does not decode.
    """
    errors = _check(channel, language, window_s, beam_size)
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)
    source = require_engine(model)
    path = Path(path)
    with AudioReader(path) as reader:
        if channel is not None and channel >= reader.channels:
            problem = (f"channel must be below {reader.channels} ({path.name} has "
                       f"{reader.channels} channel{'s' if reader.channels > 1 else ''}), "
                       f"not {channel}")
            raise ParameterError(problem, errors=[problem])
    whisper = load_model(source)
    if language is not None:
        language = language.strip().lower()
        if language not in whisper.supported_languages:
            problem = f"language {language!r} is not one the model knows (ISO 639-1, e.g. 'en')"
            raise ParameterError(problem, errors=[problem])
    options = _Options(channel, language, window_s, beam_size, vad)
    if not enhance:
        return _transcribe(path, whisper, source, options, progress, enhanced=False)
    return _transcribe_enhanced(path, whisper, source, options, progress, work_dir)


class _Options:
    """What every window is transcribed with."""

    def __init__(self, channel: int | None, language: str | None, window_s: float,
                 beam_size: int, vad: bool) -> None:
        self.channel = channel
        self.language = language
        self.window_frames = round(window_s * SAMPLE_RATE)
        self.beam_size = beam_size
        self.vad = vad


def _check(channel: object, language: object, window_s: object,
           beam_size: object) -> list[str]:
    errors = []
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)
                                or channel < 0):
        errors.append(f"channel must be a channel index (0, 1, ...) or None, not {channel!r}")
    if language is not None and (not isinstance(language, str) or not language.strip()):
        errors.append(f"language must be an ISO 639-1 code such as 'en', or None, "
                      f"not {language!r}")
    if (isinstance(window_s, bool) or not isinstance(window_s, int | float)
            or not math.isfinite(window_s) or window_s < MIN_WINDOW_S):
        errors.append(f"window_s must be at least {MIN_WINDOW_S:g} s, not {window_s!r}")
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or not 1 <= beam_size <= 16:
        errors.append(f"beam_size must be an integer from 1 to 16, not {beam_size!r}")
    return errors


def _transcribe_enhanced(path: Path, whisper: Any, source: ModelSource, options: _Options,
                         progress: Progress | None, work_dir: Path | None) -> Transcript:
    # Imported here: noisereduce and the enhancement backends load only when asked for.
    from ..enhance import enhance_file, resolve_params

    fd, name = tempfile.mkstemp(prefix="vocalink-asr-", suffix=".wav",
                                dir=None if work_dir is None else str(work_dir))
    os.close(fd)
    tmp = Path(name)
    try:
        enhance_file(path, tmp, resolve_params(None),
                     progress=span(progress, 0.0, ENHANCE_SHARE))
        return _transcribe(tmp, whisper, source, options,
                           span(progress, ENHANCE_SHARE, 1.0), enhanced=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _transcribe(path: Path, whisper: Any, source: ModelSource, options: _Options,
                progress: Progress | None, *, enhanced: bool) -> Transcript:
    report = _Monotone(progress)
    segments: list[Segment] = []
    language, probability = options.language, 1.0
    with AudioReader(path) as reader:
        duration = reader.frames / reader.sample_rate
        for start, audio in _windows(reader, options.channel, options.window_frames):
            offset, end = start / SAMPLE_RATE, (start + audio.size) / SAMPLE_RATE
            found, info = _transcribe_window(whisper, audio, language, options)
            heard = False
            for raw in found:
                segment = _segment(raw, offset, end)
                if segment is not None:
                    segments.append(segment)
                    heard = True
                report(min(offset + float(raw.end), end) / duration)
            if heard and language is None:  # fix the language once speech is heard
                language, probability = str(info.language), float(info.language_probability)
            _give_back_freed_memory()
            report(end / duration)
    report(1.0)
    return Transcript(segments=tuple(segments), language=language or "",
                      language_probability=probability if language else 0.0,
                      duration_s=duration, kind="recording", model=source.name,
                      engine=engine_label(), enhanced=enhanced)


def _transcribe_window(whisper: Any, audio: Mono, language: str | None,
                       options: _Options) -> tuple[Iterator[Any], Any]:
    """faster-whisper's lazy segments (decoding happens as they are read) and its info."""
    result: tuple[Iterator[Any], Any] = whisper.transcribe(
        audio, language=language, task="transcribe", beam_size=options.beam_size,
        word_timestamps=True, vad_filter=options.vad,
        # Each 30 s chunk on its own: a prompt carried over lets one hallucination
        # repeat itself down a long recording, and windows are independent anyway.
        condition_on_previous_text=False)
    return result


def _segment(raw: Any, offset: float, end: float) -> Segment | None:
    """A faster-whisper segment on the file's timeline, or None when it holds no text."""
    text = str(raw.text).strip()
    if not text:
        return None

    def at(t: float) -> float:
        return min(max(offset + float(t), offset), end)

    words = tuple(Word(at(w.start), at(w.end), str(w.word).strip(),
                       min(max(float(w.probability), 0.0), 1.0))
                  for w in raw.words or () if str(w.word).strip())
    if words:
        confidence = float(np.mean([w.probability for w in words]))
        start, stop = words[0].start, words[-1].end
    else:
        confidence = min(1.0, math.exp(float(raw.avg_logprob)))
        start, stop = at(raw.start), at(raw.end)
    return Segment(start, max(stop, start), text, confidence, words)


def _give_back_freed_memory() -> None:
    """Return the heap a window freed to the system (glibc's ``malloc_trim``).

    Each window's decoding allocates and frees buffers of many sizes (CTranslate2, the
    VAD's onnxruntime); glibc keeps the freed pages, fragmented, and the process grew by
    about 1 MiB a minute of audio (60 min: 1.10 x its size at 10 min). Trimmed after
    each window it stays flat (measured: 220 MiB between windows over 30 min, against
    380 to 420 MiB untrimmed). Elsewhere than glibc, nothing to do.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): no such call
        return None


class _Monotone:
    """Forwards fractions to ``progress``, never backwards, never past 1."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._done = 0.0

    def __call__(self, fraction: float) -> None:
        if self._progress is None:
            return
        self._done = max(self._done, min(1.0, fraction if math.isfinite(fraction) else 0.0))
        self._progress(self._done)


# -- windows ------------------------------------------------------------------------------------


def _mono_blocks(reader: AudioReader, channel: int | None) -> Iterator[Mono]:
    """The file as 16 kHz mono float32 blocks (a channel, or the mean of all)."""
    stream: Any = None
    if reader.sample_rate != SAMPLE_RATE:
        import soxr

        stream = soxr.ResampleStream(reader.sample_rate, SAMPLE_RATE, 1, dtype="float32",
                                     quality="HQ")
    for block in reader.blocks(max(1, round(reader.sample_rate * _READ_BLOCK_S))):
        mono = np.ascontiguousarray(block[channel] if channel is not None
                                    else block.mean(axis=0), dtype=np.float32)
        yield mono if stream is None else np.asarray(
            stream.resample_chunk(mono, last=False), dtype=np.float32)
    if stream is not None:
        yield np.asarray(stream.resample_chunk(np.zeros(0, np.float32), last=True),
                         dtype=np.float32)


def _windows(reader: AudioReader, channel: int | None,
             window_frames: int) -> Iterator[tuple[int, Mono]]:
    """``(first frame at 16 kHz, samples)`` of consecutive windows that cover the file.

    Memory: one window plus one read block.
    """
    pending: list[Mono] = []
    held = 0
    start = 0
    for block in _mono_blocks(reader, channel):
        pending.append(block)
        held += block.size
        while held >= window_frames:
            buffer = np.concatenate(pending)
            cut = _seam(buffer, window_frames)
            yield start, buffer[:cut]
            rest = buffer[cut:].copy()
            pending, held, start = [rest], rest.size, start + cut
    if held:
        yield start, np.concatenate(pending)


def _seam(x: Mono, window_frames: int) -> int:
    """Where to end a window: the middle of the quietest frame within its last seconds."""
    frame = round(_SEAM_FRAME_S * SAMPLE_RATE)
    hop = round(_SEAM_HOP_S * SAMPLE_RATE)
    lo = max(0, window_frames - round(min(_SEAM_SEARCH_S, window_frames / 4) * SAMPLE_RATE))
    region = x[lo:window_frames].astype(np.float64)
    energy = np.concatenate([[0.0], np.cumsum(region * region)])
    starts = np.arange(0, region.size - frame + 1, hop)
    if starts.size == 0:
        return window_frames
    power = energy[starts + frame] - energy[starts]
    # Digital silence makes many frames equally quiet: cut in the middle of the longest
    # run of the quietest ones, as far from the words on both sides as possible.
    quiet = power <= power.min() * 1.5 + 1e-9 * frame
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    runs = edges.reshape(-1, 2)
    first, last = runs[int(np.argmax(runs[:, 1] - runs[:, 0]))]
    best = (int(first) + int(last) - 1) // 2
    return lo + int(starts[best]) + frame // 2
