"""Noise reduction and clean-up of recordings ("enhance"), in bounded memory.

One pipeline, four optional stages, applied per channel in this order:

1. a Butterworth high-pass (rumble, handling noise), streamed with carried filter state;
2. notches at the mains frequency and its harmonics (hum), 50 or 60 Hz or detected;
3. noise reduction: noisereduce's spectral gate, or RNNoise (pyrnnoise) for speech;
4. loudness normalisation to an integrated loudness (ITU-R BS.1770, as pyloudnorm
   measures it), never past a sample peak of -1 dBFS.

noisereduce runs on overlapping chunks of ``chunk_s`` seconds: each chunk is given
real signal as context on both sides, the context is discarded, and consecutive
chunks are cross-faded over a short overlap, so that memory does not grow with the
length of the recording and there are no seams. `enhance` works on arrays;
`enhance_file` streams a file through `AudioReader` and `AudioWriter` with the
same code, and is what to use for hour-long recordings.

The auto mode (``auto=True``, the default) measures before it acts: it estimates
each channel's SNR from the spread of short-frame powers, leaves clean channels
alone, and otherwise gates with a noise profile taken from the quietest
segments of the channel itself (noisereduce's stationary mode with ``y_noise``),
reducing less the cleaner the channel is. On speech this raises SI-SDR at every
SNR from -5 to 30 dB (by 3 to 12 dB), where noisereduce's defaults (non-stationary,
no noise profile) lower it from 10 dB up (``benchmarks/enhance.py``).

Everything here is blocking CPU work: from the event loop, run it in an executor.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np

from ..errors import ParameterError
from .io import AudioReader, AudioWriter, as_channels

__all__ = [
    "PRESETS",
    "ChannelReport",
    "EnhanceParams",
    "EnhanceReport",
    "Progress",
    "enhance",
    "enhance_file",
    "resolve_params",
]

log = logging.getLogger(__name__)

#: ``progress(fraction)``: called with 0.0 first, then now and then, and 1.0 last.
Progress = Callable[[float], None]
Hum = Literal[50, 60, "auto"]
Backend = Literal["noisereduce", "rnnoise"]

BACKENDS: tuple[str, ...] = ("noisereduce", "rnnoise")
RNNOISE_INSTALL = "pip install 'vocalink-lab[rnnoise]'"

# -- the auto mode's rule ------------------------------------------------------------------
#: A channel whose estimated SNR reaches this is left alone by the auto mode.
AUTO_CLEAN_SNR_DB = 40.0
#: Under these estimated SNRs (dB), the auto mode averages in the non-stationary gate.
AUTO_BLEND_SNR_DB = (3.0, 6.0)
#: Up to this estimated SNR the auto mode's ``prop_decrease`` is `AUTO_MAX_PROP`; from
#: here to `AUTO_CLEAN_SNR_DB` it falls to `AUTO_MIN_PROP`. (1.0 gains SI-SDR at very low
#: SNR, but loses STOI: 0.9 keeps both above noisereduce's defaults.)
AUTO_FULL_SNR_DB = 20.0
AUTO_MAX_PROP, AUTO_MIN_PROP = 0.9, 0.5
#: The auto mode smooths the mask in time (not across frequency) over 100 ms at
#: `AUTO_LOW_SNR_DB` or less (fewer "musical noise" artefacts: better STOI), down to
#: 32 ms at `AUTO_FULL_SNR_DB` or more (onsets less smeared: better SI-SDR).
AUTO_TIME_SMOOTH_MS = (100.0, 32.0)
#: The stationary threshold (standard deviations above the noise's mean level): 2.5
#: at `AUTO_LOW_SNR_DB` or less, 1.0 at `AUTO_HIGH_SNR_DB` or more, linear between.
AUTO_LOW_SNR_DB, AUTO_HIGH_SNR_DB = 5.0, 30.0
AUTO_MAX_STD, AUTO_MIN_STD = 2.5, 1.0
#: A share of the power below 50 Hz above this is reported as rumble (with a hint).
AUTO_RUMBLE_SHARE = 0.10
_RUMBLE_BELOW_HZ = 50.0

# -- analysis constants ----------------------------------------------------------------------
_FRAME_S = 0.02  # short frames for the SNR estimate (as metrics.snr_estimate)
_NOISE_PERCENTILE = 10.0  # share of the quietest frames taken as noise
_SEG_FRAMES = 8  # a noise-profile segment is 8 short frames (160 ms) ...
_SEG_HOP = 4  # ... on a grid of 80 ms
_NOISE_SHARE = 0.10  # the noise profile covers about this share of the recording ...
_NOISE_MIN_SEGMENTS, _NOISE_MAX_SEGMENTS = 3, 25  # ... in 0.5 to 4 s of segments
_NOISE_SEGMENT_MARGIN_DB = 6.0  # a segment counts as noise-only within this of the floor
_NOISE_MAX_GAIN_DB = 3.0  # the most the noise profile is raised to undo its selection bias
_HUM_Q = 30.0  # notch quality: 1.7 Hz wide at 50 Hz
_HUM_PROMINENCE_DB = 10.0
_FADE_S = 0.05  # cross-fade between chunks
_PEAK_CEILING_DBFS = -1.0
_MAX_CHANNELS = 64
_BLOCK_FRAMES = 1 << 16
_EPS = 1e-20


# ------------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnhanceParams:
    """Every setting of `enhance`; the defaults are the auto mode.

    Build one with keywords, `from_dict` (for JSON and form input: every problem is
    reported at once) or `resolve_params` (a preset plus overrides). An invalid value
    raises `~vocalink_lab.errors.ParameterError` listing each bad field.

    Attributes
    ----------
    auto : bool
        Measure first, then decide (default True). Per channel: estimate the SNR
        (blind, from the spread of 20 ms frame powers); at 40 dB or more leave the
        channel as it is; otherwise gate it in stationary mode against a noise
        profile made of its quietest segments (or ``noise_clip``), with
        ``prop_decrease`` 0.9 up to 20 dB and down to 0.5 near 40 dB,
        ``n_std_thresh_stationary`` from 2.5 at 5 dB or less to 1.0 at 30 dB,
        ``time_mask_smooth_ms`` from 100 to 32 ms, and no smoothing across
        frequency (``freq_mask_smooth_hz=None``: noisereduce's smoothing across
        frequency fades out everything below ``freq_mask_smooth_hz`` even where
        nothing is gated, which alone costs a clean voice 6 dB of SI-SDR at 500
        Hz). Those six settings are the auto mode's to decide: the values given for
        them are ignored. It also reports rumble (and suggests ``highpass_hz``),
        but filters only as asked. The report says what it decided and why.
    reduce : bool
        Run noise reduction at all (False: only the filters and loudness).
    stationary : bool
        noisereduce's stationary gate (a fixed threshold per frequency from a noise
        profile: ``noise_clip``, or the quietest segments of each channel) instead of
        the non-stationary one (a threshold that follows a running average of the
        signal itself, over ``time_constant_s``).
    prop_decrease : float
        How much of the noise to remove, 0 to 1 (1: all of it).
    n_std_thresh_stationary : float
        Stationary gate: the threshold sits this many standard deviations above the
        noise profile's mean level, per frequency (higher: gentler).
    thresh_n_mult_nonstationary : float
        Non-stationary gate: how far above its running average a bin must rise to
        be kept (higher: gentler).
    sigmoid_slope_nonstationary : float
        Non-stationary gate: the steepness of its soft mask.
    time_constant_s : float
        Non-stationary gate: the time constant of the running average, in seconds.
    freq_mask_smooth_hz : float or None
        Smooth the mask over this many Hz (None: no smoothing across frequency).
        It must be at least ``sr / (n_fft / 2)``.
    time_mask_smooth_ms : float or None
        Smooth the mask over this many milliseconds (None: no smoothing in time).
        It must be at least one hop (``hop_length / sr``).
    n_fft : int
        STFT length in samples (a power of two is fastest).
    win_length : int or None
        STFT window length, at most ``n_fft`` (None: ``n_fft``).
    hop_length : int or None
        STFT hop, at most ``win_length`` (None: ``win_length // 4``).
    noise_clip : (float, float) or None
        ``(start_s, end_s)``: a part of the input holding noise only, used as the
        noise profile of every channel (stationary mode, and the auto mode). None:
        each channel's quietest segments.
    highpass_hz : float or None
        Cutoff of a Butterworth high-pass (None: none).
    highpass_order : int
        Order of that high-pass (1 to 8; 24 dB/octave at 4).
    hum : {None, 50, 60, "auto"}
        Notch the mains frequency and its harmonics: 50 or 60 Hz, or "auto" to
        detect which (and leave the audio alone when there is no hum).
    hum_harmonics : int
        How many harmonics to notch, the fundamental included (1 to 40; those above
        Nyquist are skipped).
    loudness_lufs : float or None
        Normalise the integrated loudness (ITU-R BS.1770) to this many LUFS, -70 to
        0 (e.g. -23 for EBU R128, -16 for podcasts). The gain is limited so that
        the sample peak stays at or below -1 dBFS: it never clips.
    backend : {"noisereduce", "rnnoise"}
        The noise reducer: noisereduce's spectral gate, or RNNoise, a small neural
        network for speech (48 kHz inside; ``pip install 'vocalink-lab[rnnoise]'``).
        RNNoise has no parameters: the gate settings and the auto mode's
        ``prop_decrease`` do not apply to it.
    chunk_s : float
        noisereduce works on chunks of this many seconds (1 to 3600): memory grows
        with ``chunk_s``, never with the length of the recording.
    """

    auto: bool = True
    reduce: bool = True
    stationary: bool = False
    prop_decrease: float = 1.0
    n_std_thresh_stationary: float = 1.5
    thresh_n_mult_nonstationary: float = 2.0
    sigmoid_slope_nonstationary: float = 10.0
    time_constant_s: float = 2.0
    freq_mask_smooth_hz: float | None = 500.0
    time_mask_smooth_ms: float | None = 50.0
    n_fft: int = 1024
    win_length: int | None = None
    hop_length: int | None = None
    noise_clip: tuple[float, float] | None = None
    highpass_hz: float | None = None
    highpass_order: int = 4
    hum: Hum | None = "auto"
    hum_harmonics: int = 5
    loudness_lufs: float | None = None
    backend: Backend = "noisereduce"
    chunk_s: float = 30.0

    def __post_init__(self) -> None:
        values, errors = _coerce({f.name: getattr(self, f.name) for f in _FIELDS})
        if errors:
            raise ParameterError(_summary(errors), errors=errors)
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> EnhanceParams:
        """Build from a mapping (JSON, a form), checking every key and value.

        Parameters
        ----------
        mapping : mapping of str to object
            Field names (see the class) to values; missing fields keep their
            defaults. ``noise_clip`` may be a two-item list.

        Returns
        -------
        EnhanceParams

        Raises
        ------
        ParameterError
            One error for all the problems: unknown keys (with the closest known
            name) and bad values (with what is allowed), one entry per field in
            ``errors``.
        """
        if not isinstance(mapping, Mapping):
            raise ParameterError(f"enhance parameters must be a mapping of names to values, "
                                 f"not {type(mapping).__name__}")
        errors = [_unknown_key(key) for key in mapping if key not in _FIELD_NAMES]
        values, value_errors = _coerce({k: v for k, v in mapping.items() if k in _FIELD_NAMES})
        errors += value_errors
        if errors:
            raise ParameterError(_summary(errors), errors=errors)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (`from_dict` reads it back)."""
        out = {f.name: getattr(self, f.name) for f in _FIELDS}
        if self.noise_clip is not None:
            out["noise_clip"] = list(self.noise_clip)
        return out

    def replace(self, **changes: Any) -> EnhanceParams:
        """A copy with ``changes`` applied, checked like `from_dict`."""
        return type(self).from_dict({**self.to_dict(), **changes})


_FIELDS = dataclasses.fields(EnhanceParams)
_FIELD_NAMES = frozenset(f.name for f in _FIELDS)


def _summary(errors: Sequence[str]) -> str:
    if len(errors) == 1:
        return f"invalid enhance parameter: {errors[0]}"
    return f"{len(errors)} invalid enhance parameters: " + "; ".join(errors)


def _unknown_key(key: object) -> str:
    close = difflib.get_close_matches(str(key), sorted(_FIELD_NAMES), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown parameter '{key}'{hint}; known: {', '.join(sorted(_FIELD_NAMES))}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_)


def _coerce(values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check and normalise field values; return them and one message per bad field."""
    out: dict[str, Any] = {}
    errors: list[str] = []

    def number(name: str, low: float, high: float, *, optional: bool = False,
               integer: bool = False, low_open: bool = False, what: str = "") -> None:
        if name not in values:
            return
        value = values[name]
        if value is None and optional:
            out[name] = None
            return
        ok = _is_number(value) and math.isfinite(float(value))
        if ok and integer:
            ok = float(value).is_integer()
        if ok:
            v = float(value)
            ok = (low < v if low_open else low <= v) and v <= high
        if not ok:
            kind = "a whole number" if integer else "a number"
            bounds = (f"above {low:g} up to {high:g}" if low_open
                      else f"from {low:g} to {high:g}")
            none = " or null" if optional else ""
            errors.append(f"{name} must be {kind} {bounds}{none}{what}, not {value!r}")
            return
        out[name] = int(value) if integer else float(value)

    for name in ("auto", "reduce", "stationary"):
        if name in values:
            if isinstance(values[name], bool | np.bool_):
                out[name] = bool(values[name])
            else:
                errors.append(f"{name} must be true or false, not {values[name]!r}")
    number("prop_decrease", 0.0, 1.0, what=" (the share of the noise to remove)")
    number("n_std_thresh_stationary", 0.0, 10.0)
    number("thresh_n_mult_nonstationary", 0.0, 100.0, low_open=True)
    number("sigmoid_slope_nonstationary", 0.0, 1000.0, low_open=True)
    number("time_constant_s", 0.0, 60.0, low_open=True)
    number("freq_mask_smooth_hz", 0.0, 24000.0, optional=True, low_open=True)
    number("time_mask_smooth_ms", 0.0, 5000.0, optional=True, low_open=True)
    number("n_fft", 16, 65536, integer=True)
    number("win_length", 16, 65536, integer=True, optional=True)
    number("hop_length", 1, 65536, integer=True, optional=True)
    number("highpass_hz", 0.0, 24000.0, optional=True, low_open=True)
    number("highpass_order", 1, 8, integer=True)
    number("hum_harmonics", 1, 40, integer=True)
    number("loudness_lufs", -70.0, 0.0, optional=True)
    number("chunk_s", 1.0, 3600.0)
    if "noise_clip" in values:
        clip = values["noise_clip"]
        if clip is None:
            out["noise_clip"] = None
        elif (isinstance(clip, Sequence) and not isinstance(clip, str) and len(clip) == 2
              and all(_is_number(v) and math.isfinite(float(v)) for v in clip)
              and 0 <= float(clip[0]) < float(clip[1])):
            out["noise_clip"] = (float(clip[0]), float(clip[1]))
        else:
            errors.append("noise_clip must be null or [start_s, end_s] with "
                          f"0 <= start_s < end_s (a noise-only part of the input), not {clip!r}")
    if "hum" in values:
        hum = values["hum"]
        if isinstance(hum, str) and hum.strip().lower() in ("50", "60", "auto", "none", "off"):
            hum = hum.strip().lower()
            hum = None if hum in ("none", "off") else hum if hum == "auto" else int(hum)
        if hum is None or hum == "auto" or (_is_number(hum) and float(hum) in (50.0, 60.0)):
            out["hum"] = hum if hum is None or hum == "auto" else int(hum)
        else:
            errors.append(f"hum must be null, 50, 60 or \"auto\" (mains frequency in Hz), "
                          f"not {hum!r}")
    if "backend" in values:
        if values["backend"] in BACKENDS:
            out["backend"] = values["backend"]
        else:
            errors.append(f"backend must be one of {', '.join(BACKENDS)}, "
                          f"not {values['backend']!r}")
    n_fft = out.get("n_fft", values.get("n_fft", 1024))
    win = out.get("win_length", values.get("win_length"))
    hop = out.get("hop_length", values.get("hop_length"))
    if isinstance(n_fft, int) and isinstance(win, int) and win > n_fft:
        errors.append(f"win_length must be at most n_fft ({n_fft}), not {win}")
    elif isinstance(hop, int) and isinstance(win or n_fft, int) and hop > (win or n_fft):
        errors.append(f"hop_length must be at most the window ({win or n_fft}), not {hop}")
    return out, errors


#: Named settings; `resolve_params` starts from one of them.
PRESETS: dict[str, EnhanceParams] = {
    # Measure, then do what the recording needs (nothing, if it is clean).
    "auto": EnhanceParams(),
    # Spoken word: the auto mode, plus an 80 Hz high-pass and EBU R128 loudness.
    "speech": EnhanceParams(highpass_hz=80.0, loudness_lufs=-23.0),
    # Take a little off: half of a steady noise floor. noisereduce's 500 Hz frequency
    # smoothing is off: it fades the mask out below 500 Hz (6 dB of SI-SDR on clean speech).
    "gentle": EnhanceParams(auto=False, hum=None, stationary=True, prop_decrease=0.5,
                            freq_mask_smooth_hz=None),
    # A steady noise floor (fans, hiss, traffic) under speech: all of it, and the rumble.
    "strong": EnhanceParams(auto=False, stationary=True, freq_mask_smooth_hz=None,
                            highpass_hz=80.0),
    # Mains hum only: detect 50 or 60 Hz and notch 10 harmonics; no gating.
    "hum": EnhanceParams(auto=False, reduce=False, hum="auto", hum_harmonics=10),
}


def resolve_params(preset: str | None = None, **overrides: Any) -> EnhanceParams:
    """A preset with some fields changed.

    Parameters
    ----------
    preset : str, optional
        A key of `PRESETS` (default "auto").
    **overrides
        Fields to change, checked like `EnhanceParams.from_dict`.

    Returns
    -------
    EnhanceParams

    Raises
    ------
    ParameterError
        Unknown preset (the message lists them), or bad overrides.

    Examples
    --------
    >>> resolve_params("strong", prop_decrease=0.8).stationary
    True
    """
    name = "auto" if preset is None else preset
    if name not in PRESETS:
        raise ParameterError(f"unknown enhance preset '{name}'; presets: {', '.join(PRESETS)}",
                             errors=[f"preset must be one of {', '.join(PRESETS)}, "
                                     f"not {name!r}"])
    base = PRESETS[name]
    return base.replace(**overrides) if overrides else base


def _params_from(params: EnhanceParams | Mapping[str, Any] | str | None) -> EnhanceParams:
    if params is None:
        return PRESETS["auto"]
    if isinstance(params, EnhanceParams):
        return params
    if isinstance(params, str):
        return resolve_params(params)
    return EnhanceParams.from_dict(params)


# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelReport:
    """What was done to one channel, and why.

    Attributes
    ----------
    channel : int
        Index.
    snr_in_db, snr_out_db : float
        Blind SNR estimates of the input and the output (see
        `vocalink_lab.audio.metrics.snr_estimate`; 100 when the pauses are silent).
    params : EnhanceParams
        The settings in effect for this channel (the auto mode's decisions
        applied; ``auto`` is then False and ``hum`` the notched frequency or None).
    noise_clips_s : tuple of (float, float)
        The noise-only segments (seconds) that made the noise profile, if any.
    hum_notched : bool
        Whether the hum notches ran on this channel.
    decision : str
        What the auto mode decided and why (or "as requested").
    """

    channel: int
    snr_in_db: float
    snr_out_db: float
    params: EnhanceParams
    noise_clips_s: tuple[tuple[float, float], ...]
    hum_notched: bool
    decision: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"channel": self.channel, "snr_in_db": self.snr_in_db,
                "snr_out_db": self.snr_out_db, "params": self.params.to_dict(),
                "noise_clips_s": [list(c) for c in self.noise_clips_s],
                "hum_notched": bool(self.hum_notched), "decision": self.decision}


@dataclass(frozen=True, slots=True)
class EnhanceReport:
    """What `enhance` measured, decided and did.

    Attributes
    ----------
    params : EnhanceParams
        The settings asked for.
    sample_rate, channels, frames : int
        The audio's shape.
    channel_reports : tuple of ChannelReport
        Per channel: SNR in and out, effective settings, noise profile, decision.
    highpass_hz : float or None
        The high-pass cutoff applied (given, or chosen by the auto mode).
    hum_hz : float or None
        The mains frequency notched (given, or detected), None if none.
    hum_prominence_db : float or None
        With ``hum="auto"``: how far the detected (or strongest) hum line stood
        above the spectrum around it.
    rumble_share : float or None
        Share of the input's power below 50 Hz (measured when the auto mode ran).
    loudness_in_lufs, loudness_out_lufs : float
        Integrated loudness (BS.1770) of the input and the output; nan under 0.4 s.
    gain_db : float
        Gain applied by loudness normalisation (0 without it).
    gain_limited : bool
        True when the gain was lowered to keep the sample peak at -1 dBFS (the
        loudness target was then not reached).
    peak_in_dbfs, peak_out_dbfs : float
        Sample peaks.
    decisions : tuple of str
        Everything decided, in words, in order.
    seconds : float
        Wall time taken.
    """

    params: EnhanceParams
    sample_rate: int
    channels: int
    frames: int
    channel_reports: tuple[ChannelReport, ...]
    highpass_hz: float | None
    hum_hz: float | None
    hum_prominence_db: float | None
    rumble_share: float | None
    loudness_in_lufs: float
    loudness_out_lufs: float
    gain_db: float
    gain_limited: bool
    peak_in_dbfs: float
    peak_out_dbfs: float
    decisions: tuple[str, ...]
    seconds: float = field(default=0.0)

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return self.frames / self.sample_rate

    @property
    def snr_in_db(self) -> tuple[float, ...]:
        """Estimated input SNR per channel."""
        return tuple(c.snr_in_db for c in self.channel_reports)

    @property
    def snr_out_db(self) -> tuple[float, ...]:
        """Estimated output SNR per channel."""
        return tuple(c.snr_out_db for c in self.channel_reports)

    @property
    def auto(self) -> str | None:
        """What the auto mode decided, in one line (None when it was off)."""
        return "; ".join(self.decisions) if self.params.auto else None

    @property
    def realtime_factor(self) -> float:
        """Processing time over audio duration (0.1: ten times faster than real time)."""
        return self.seconds / self.duration_s if self.frames else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (non-finite numbers become None)."""
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        return {
            "params": self.params.to_dict(),
            "sample_rate": self.sample_rate, "channels": self.channels, "frames": self.frames,
            "duration_s": self.duration_s,
            "channel_reports": [c.to_dict() for c in self.channel_reports],
            "snr_in_db": list(self.snr_in_db), "snr_out_db": list(self.snr_out_db),
            "highpass_hz": self.highpass_hz, "hum_hz": self.hum_hz,
            "hum_prominence_db": clean(self.hum_prominence_db),
            "rumble_share": clean(self.rumble_share),
            "loudness_in_lufs": clean(self.loudness_in_lufs),
            "loudness_out_lufs": clean(self.loudness_out_lufs),
            "gain_db": self.gain_db, "gain_limited": self.gain_limited,
            "peak_in_dbfs": self.peak_in_dbfs, "peak_out_dbfs": self.peak_out_dbfs,
            "decisions": list(self.decisions), "auto": self.auto, "seconds": self.seconds,
            "realtime_factor": self.realtime_factor,
        }


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------


def enhance(audio: Any, sr: int, params: EnhanceParams | Mapping[str, Any] | str | None = None,
            *, progress: Progress | None = None) -> tuple[np.ndarray, EnhanceReport]:
    """Reduce noise, hum and rumble, and normalise loudness.

    Parameters
    ----------
    audio : np.ndarray, shape (frames,) or (channels, frames)
        Samples, float in [-1, 1] (any real dtype); channels are processed
        independently (each with its own SNR estimate and noise profile).
    sr : int
        Sample rate in Hz.
    params : EnhanceParams, mapping, str or None
        Settings, a mapping for `EnhanceParams.from_dict`, or a preset name;
        None is the "auto" preset.
    progress : callable, optional
        ``progress(fraction)`` with a fraction from 0 to 1, now and then (raise
        from it to cancel).

    Returns
    -------
    enhanced : np.ndarray, float32, the shape of ``audio``
    report : EnhanceReport

    Raises
    ------
    ParameterError
        Bad settings (each problem listed), audio that is not ``(channels,
        frames)`` (e.g. ``(frames, channels)``: pass ``audio.T``), NaN samples, or
        RNNoise asked for but not installed.

    Examples
    --------
    >>> from vocalink_lab.audio import synth
    >>> clean = synth.speech_like(3.0, 16000)
    >>> noisy = synth.mix_at_snr(clean, synth.noise(clean.size, seed=1), 5.0)
    >>> out, report = enhance(noisy, 16000)
    >>> out.shape == noisy.shape, out.dtype
    (True, dtype('float32'))
    """
    p = _params_from(params)
    x = as_channels(audio)
    if x.shape[0] > _MAX_CHANNELS:
        raise ParameterError(f"audio has {x.shape[0]} channels; at most {_MAX_CHANNELS}")
    source = _ArraySource(x, _check_rate(sr))
    out = np.empty_like(x)
    position = 0

    def sink(block: np.ndarray) -> None:
        nonlocal position
        out[:, position:position + block.shape[1]] = block
        position += block.shape[1]

    began = time.perf_counter()
    result = _Pipeline(source, p, progress).run(sink, final_pass=False)
    if position != x.shape[1]:  # pragma: no cover - an internal invariant
        raise RuntimeError(f"enhance produced {position} frames for {x.shape[1]}")
    if result.gain != 1.0:
        out *= np.float32(result.gain)
    report = result.report(time.perf_counter() - began)
    if progress is not None:
        progress(1.0)
    return (out[0] if np.ndim(audio) == 1 else out), report


def enhance_file(src: Path | str, dst: Path | str,
                 params: EnhanceParams | Mapping[str, Any] | str | None = None, *,
                 progress: Progress | None = None, subtype: str | None = None) -> EnhanceReport:
    """Enhance an audio file into another, streaming: memory does not grow with its length.

    The file is read through `AudioReader` in blocks: once to analyse it (noise
    level, noise profile, hum) when the settings need that, once to process it;
    with ``loudness_lufs``, the processed audio goes to a temporary float WAV next
    to ``dst`` while its loudness is measured, and a last pass applies the gain.

    Parameters
    ----------
    src : Path or str
        Any format `AudioReader` decodes.
    dst : Path or str
        Output; its extension picks the format (``.wav`` or ``.flac``).
    params : EnhanceParams, mapping, str or None
        As for `enhance`.
    progress : callable, optional
        ``progress(fraction)``, 0 to 1.
    subtype : str, optional
        Sample type of ``dst`` (see `AudioWriter`; PCM_24 by default).

    Returns
    -------
    EnhanceReport

    Raises
    ------
    ParameterError
        As for `enhance`, or an output format that cannot be written.
    AudioFormatError
        ``src`` does not decode.
    """
    p = _params_from(params)
    dst = Path(dst)
    if dst.exists() and dst.resolve() == Path(src).resolve():
        raise ParameterError(f"dst is src ({dst}): write the enhanced audio to another file")
    began = time.perf_counter()
    with AudioReader(src) as reader:
        if reader.channels > _MAX_CHANNELS:
            raise ParameterError(f"{src} has {reader.channels} channels; at most {_MAX_CHANNELS}")
        rate = _check_rate(reader.sample_rate)
        pipeline = _Pipeline(reader, p, progress)
        needs_gain_pass = p.loudness_lufs is not None
        target = dst.with_name(dst.name + ".pre.wav") if needs_gain_pass else dst
        try:
            with AudioWriter(target, rate, reader.channels,
                             subtype="FLOAT" if needs_gain_pass else subtype) as writer:
                result = pipeline.run(writer.write, final_pass=needs_gain_pass)
            if needs_gain_pass:
                gain = np.float32(result.gain)
                with AudioReader(target) as pre, AudioWriter(dst, rate, pre.channels,
                                                             subtype=subtype) as writer:
                    done = 0
                    for block in pre.blocks(_BLOCK_FRAMES):
                        writer.write(block * gain)
                        done += block.shape[1]
                        if progress is not None:
                            progress(0.9 + 0.1 * done / max(1, pre.frames))
        finally:
            if needs_gain_pass:
                target.unlink(missing_ok=True)
    report = result.report(time.perf_counter() - began)
    if progress is not None:
        progress(1.0)
    return report


def _check_rate(sr: Any) -> int:
    if not _is_number(sr) or not float(sr).is_integer() or not 1000 <= int(sr) <= 768_000:
        raise ParameterError(f"sr must be a whole number of Hz from 1000 to 768000, not {sr!r}")
    return int(sr)


# ------------------------------------------------------------------------------------------------
# Sources: an array, or an AudioReader
# ------------------------------------------------------------------------------------------------


class _Source(Protocol):
    sample_rate: int
    channels: int
    frames: int

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]: ...

    def read(self, start: int = 0, frames: int | None = None) -> np.ndarray: ...


class _ArraySource:
    """An in-memory ``(channels, frames)`` array that reads like an `AudioReader`."""

    def __init__(self, x: np.ndarray, sr: int) -> None:
        self._x = x
        self.sample_rate = sr
        self.channels, self.frames = x.shape

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        for i in range(0, self.frames, block_frames):
            yield self._x[:, i:i + block_frames]

    def read(self, start: int = 0, frames: int | None = None) -> np.ndarray:
        end = self.frames if frames is None else start + frames
        return self._x[:, start:end]


# ------------------------------------------------------------------------------------------------
# Streaming measurements
# ------------------------------------------------------------------------------------------------


class _Framer:
    """Cut a stream of ``(channels, n)`` blocks into consecutive frames of ``size``."""

    def __init__(self, channels: int, size: int) -> None:
        self.size = size
        self.count = 0  # frames handed out so far
        self._rest = np.zeros((channels, 0), np.float64)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Complete frames, shape ``(channels, n, size)``, float64."""
        data = np.concatenate([self._rest, x], axis=1) if self._rest.shape[1] else x
        n = data.shape[1] // self.size
        self._rest = np.array(data[:, n * self.size:], dtype=np.float64)
        self.count += n
        frames: np.ndarray = np.asarray(data[:, :n * self.size], dtype=np.float64)
        return frames.reshape(data.shape[0], n, self.size)

    @property
    def rest(self) -> np.ndarray:
        """What did not make a whole frame yet, ``(channels, m)``."""
        return self._rest


class _PowerHistogram:
    """Per-channel histogram of frame powers (0.05 dB bins, with their sums): O(1) memory."""

    _LOW_DB, _HIGH_DB, _STEP_DB = -250.0, 30.0, 0.05

    def __init__(self, channels: int) -> None:
        n = int((self._HIGH_DB - self._LOW_DB) / self._STEP_DB) + 2  # bin 0: digital silence
        self.counts = np.zeros((channels, n), np.int64)
        self.sums = np.zeros((channels, n), np.float64)

    def add(self, powers: np.ndarray) -> None:
        """Add frame powers shaped ``(channels, n)``."""
        if powers.shape[1] == 0:
            return
        with np.errstate(divide="ignore"):
            db = 10 * np.log10(powers)
        idx = np.where(powers > 0,
                       np.clip((db - self._LOW_DB) / self._STEP_DB, 0, self.counts.shape[1] - 2)
                       .astype(np.int64) + 1, 0)
        for ch in range(powers.shape[0]):
            self.counts[ch] += np.bincount(idx[ch], minlength=self.counts.shape[1])
            self.sums[ch] += np.bincount(idx[ch], weights=powers[ch],
                                         minlength=self.counts.shape[1])

    def total(self) -> int:
        return int(self.counts[0].sum()) if self.counts.size else 0

    def quietest_mean(self, ch: int, share: float) -> float:
        """Mean power of the quietest ``share`` of the frames of channel ``ch``."""
        total = int(self.counts[ch].sum())
        k = max(1, int(total * share))
        cum = np.cumsum(self.counts[ch])
        i = int(np.searchsorted(cum, k))
        below = int(cum[i - 1]) if i else 0
        power = float(self.sums[ch, :i].sum())
        if self.counts[ch, i]:
            power += float(self.sums[ch, i]) / int(self.counts[ch, i]) * (k - below)
        return power / k

    def snr_db(self, ch: int) -> float:
        """The SNR estimate of `metrics.snr_estimate`, for one channel."""
        total = int(self.counts[ch].sum())
        if total == 0:
            return math.nan
        noise = self.quietest_mean(ch, _NOISE_PERCENTILE / 100)
        signal = float(self.sums[ch].sum()) / total - noise
        if noise <= _EPS * 1e-4:
            return 100.0 if signal > 0 else 0.0
        if signal <= 0:
            return -100.0
        return float(np.clip(10 * math.log10(signal / noise), -100.0, 100.0))


class _LoudnessMeter:
    """Integrated loudness per ITU-R BS.1770-4, streaming, as pyloudnorm computes it.

    K-weighting (pyloudnorm's two biquads) with carried state; mean squares of
    100 ms steps; 400 ms gating blocks every 100 ms; block loudness kept in a
    0.01 LU histogram (with the blocks' power summed per bin) for the absolute
    (-70 LUFS) and relative (-10 LU) gates, so memory stays constant.
    """

    _LOW, _HIGH, _STEP = -70.0, 10.0, 0.01
    _WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)

    def __init__(self, channels: int, sr: int) -> None:
        from scipy import signal as sps

        iir = importlib.import_module("pyloudnorm.iirfilter")
        shelf = iir.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sr, "high_shelf")
        highpass = iir.IIRfilter(0.0, 0.5, 38.0, sr, "high_pass")
        self._sos = np.vstack([sps.tf2sos(f.b, f.a) for f in (shelf, highpass)])
        self._zi = np.zeros((self._sos.shape[0], channels, 2))
        self._step = round(0.1 * sr)
        self._framer = _Framer(channels, self._step)
        self._g = np.array([self._WEIGHTS[c] if c < 5 else 1.0 for c in range(channels)])
        self._last = np.zeros((0,))  # weighted power sums of the last three 100 ms steps
        n = int((self._HIGH - self._LOW) / self._STEP) + 1
        self._counts = np.zeros(n, np.int64)
        self._sums = np.zeros(n, np.float64)

    def push(self, x: np.ndarray) -> None:
        from scipy import signal as sps

        if x.shape[1] == 0:
            return
        y, self._zi = sps.sosfilt(self._sos, x, axis=-1, zi=self._zi)
        steps = self._framer.push(y)
        if steps.shape[1] == 0:
            return
        energy = np.square(steps).sum(axis=2)  # (channels, n)
        weighted = self._g @ energy  # (n,)
        seq = np.concatenate([self._last, weighted])
        if seq.size >= 4:
            blocks = np.convolve(seq, np.ones(4), mode="valid") / (4 * self._step)
            with np.errstate(divide="ignore"):
                loud = -0.691 + 10 * np.log10(blocks)
            keep = loud >= self._LOW
            idx = np.clip(((loud[keep] - self._LOW) / self._STEP).astype(np.int64), 0,
                          self._counts.size - 1)
            self._counts += np.bincount(idx, minlength=self._counts.size)
            self._sums += np.bincount(idx, weights=blocks[keep], minlength=self._counts.size)
        self._last = seq[-3:]

    def lufs(self) -> float:
        """Integrated loudness; nan before one block, -120 when all blocks are gated."""
        if self._framer.count < 4:
            return math.nan
        if not self._counts.any():
            return -120.0
        gamma_r = -0.691 + 10 * math.log10(self._sums.sum() / self._counts.sum()) - 10.0
        centres = self._LOW + (np.arange(self._counts.size) + 0.5) * self._STEP
        above = centres > gamma_r
        count = int(self._counts[above].sum())
        if count == 0:
            return -120.0
        return -0.691 + 10 * math.log10(float(self._sums[above].sum()) / count)


class _NoiseSegments:
    """Candidate noise-only segments of each channel: a uniform sample, O(1) memory.

    Every segment of `_SEG_FRAMES` short frames on a grid of `_SEG_HOP` frames is a
    candidate, with its loudest and its mean frame power. All are kept until there
    are ``keep``; then every other one is dropped and the stride doubles, so that the
    sample stays evenly spread over the recording, however long it is.
    """

    def __init__(self, channels: int, keep: int = 4096) -> None:
        self._keep = keep
        self._stride = 1  # keep the candidates whose index is a multiple of this
        self._carry = np.zeros((channels, 0))
        self._carry_start = 0  # index (in short frames) of the first carried frame
        self.start = np.zeros(0, np.int64)  # segment starts, in short frames
        self.loudest = np.zeros((channels, 0))
        self.mean = np.zeros((channels, 0))

    def push(self, powers: np.ndarray) -> None:
        """Add short-frame powers ``(channels, n)``."""
        data = np.concatenate([self._carry, powers], axis=1)
        first = self._carry_start
        offset = (-first) % _SEG_HOP  # segments start on the grid of _SEG_HOP frames
        starts = np.arange(offset, data.shape[1] - _SEG_FRAMES + 1, _SEG_HOP)
        if starts.size:
            windows = np.lib.stride_tricks.sliding_window_view(data, _SEG_FRAMES, axis=1)
            chosen = starts[((starts + first) // _SEG_HOP) % self._stride == 0]
            self.start = np.concatenate([self.start, chosen + first])
            self.loudest = np.concatenate([self.loudest, windows[:, chosen].max(axis=2)],
                                          axis=1)
            self.mean = np.concatenate([self.mean, windows[:, chosen].mean(axis=2)], axis=1)
            while self.start.size > self._keep:
                self._stride *= 2
                keep = (self.start // _SEG_HOP) % self._stride == 0
                self.start, self.loudest, self.mean = (self.start[keep], self.loudest[:, keep],
                                                       self.mean[:, keep])
            cut = int(starts[-1]) + _SEG_HOP
        else:
            cut = offset if data.shape[1] >= offset else 0
            cut = 0 if data.shape[1] < _SEG_FRAMES else cut
        self._carry = data[:, cut:]
        self._carry_start = first + cut

    def pick(self, ch: int, count: int, floor: float) -> tuple[list[int], float]:
        """Up to ``count`` quiet, non-overlapping segment starts (in short frames), and a gain.

        The segments are those whose loudest frame is lowest: the surest to hold no
        voice. But the quietest of many noise segments under-state the noise (by 2-3 dB
        in pink noise, whose power swings), and a gate fed with them lets noise
        through; the gain (at most +3 dB) brings them to the typical power of the
        noise-only segments (loudest frame within `_NOISE_SEGMENT_MARGIN_DB` of
        ``floor``).
        """
        loudest, mean = self.loudest[ch], self.mean[ch]
        chosen: list[int] = []
        powers: list[float] = []
        for i in np.argsort(loudest, kind="stable"):
            start = int(self.start[i])
            if all(abs(start - c) >= _SEG_FRAMES for c in chosen):
                chosen.append(start)
                powers.append(float(mean[i]))
                if len(chosen) == count:
                    break
        quiet = mean[loudest <= floor * 10 ** (_NOISE_SEGMENT_MARGIN_DB / 10)]
        gain = 1.0
        if quiet.size >= 2 * len(chosen) and chosen and np.mean(powers) > 0:
            gain = float(np.clip(np.sqrt(np.median(quiet) / np.mean(powers)), 1.0,
                                 10 ** (_NOISE_MAX_GAIN_DB / 20)))
        return sorted(chosen), gain


class _HumSpectrum:
    """Mean log-power spectrum of 1 s Hann-windowed segments (1 Hz bins), and rumble power."""

    def __init__(self, channels: int, sr: int, fmax: float) -> None:
        self._framer = _Framer(channels, sr)
        self._window = np.hanning(sr)
        self._bins = int(min(sr // 2, fmax + 20)) + 1
        self._rumble = int(_RUMBLE_BELOW_HZ)
        self.log_sum = np.zeros((channels, self._bins))
        self.rumble = np.zeros(channels)
        self.power = np.zeros(channels)
        self.segments = 0

    def push(self, x: np.ndarray) -> None:
        segments = self._framer.push(x)
        for k in range(segments.shape[1]):
            spectrum = np.abs(np.fft.rfft(segments[:, k] * self._window, axis=-1)) ** 2
            self.log_sum += 10 * np.log10(spectrum[:, :self._bins] + _EPS)
            self.rumble += spectrum[:, 1:self._rumble].sum(axis=1)
            self.power += spectrum[:, 1:].sum(axis=1)
            self.segments += 1

    def rumble_share(self) -> float:
        total = float(self.power.sum())
        return float(self.rumble.sum()) / total if total > 0 else 0.0

    def detect(self, harmonics: int) -> tuple[float | None, float, list[bool]]:
        """The mains frequency (or None), its prominence in dB, and which channels hum."""
        if self.segments < 1:
            return None, math.nan, []
        mean = self.log_sum / self.segments  # (channels, bins), dB
        threshold = _HUM_PROMINENCE_DB + 12.0 / math.sqrt(self.segments) - 12.0 / 3.0
        threshold = max(_HUM_PROMINENCE_DB, threshold)
        best: tuple[float, float, float, list[bool]] | None = None  # score, hz, prom, channels
        for base in (50.0, 60.0):
            ks = [k for k in range(1, min(harmonics, 5) + 1) if k * base + 16 < self._bins]
            if not ks:
                continue
            prom = np.array([[_prominence(mean[ch], k * base) for k in ks]
                             for ch in range(mean.shape[0])])  # (channels, harmonics)
            hums = [(p[0] >= threshold) or (int((p >= threshold).sum()) >= 2 and bool(
                (p[0::2] >= threshold).any())) for p in prom]
            score = float(np.max(prom[:, 0]))
            if any(hums):
                score = 1000.0 + float(np.max(np.sum(np.clip(prom, 0, None), axis=1)))
            if best is None or score > best[0]:
                best = (score, base, float(np.max(prom)), hums)
        if best is None:
            return None, math.nan, []
        _, base, prominence, hums = best
        if not any(hums):
            return None, prominence, hums
        return _refine(mean[[i for i, h in enumerate(hums) if h]].mean(axis=0), base,
                       harmonics, self._bins), prominence, hums


def _prominence(spectrum_db: np.ndarray, hz: float) -> float:
    """How far the peak at ``hz`` (±1 bin) stands above the median 5-15 Hz around it."""
    b = int(round(hz))
    peak = float(spectrum_db[b - 1:b + 2].max())
    around = np.concatenate([spectrum_db[b - 15:b - 4], spectrum_db[b + 5:b + 16]])
    return peak - float(np.median(around))


def _refine(spectrum_db: np.ndarray, base: float, harmonics: int, bins: int) -> float:
    """The mains frequency to 0.01 Hz: parabolic peaks of the harmonics, weighted."""
    estimates, weights = [], []
    for k in range(1, harmonics + 1):
        b = int(round(k * base))
        if b + 16 >= bins:
            break
        i = b - 1 + int(np.argmax(spectrum_db[b - 1:b + 2]))
        y0, y1, y2 = spectrum_db[i - 1], spectrum_db[i], spectrum_db[i + 1]
        denom = y0 - 2 * y1 + y2
        delta = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
        weight = max(0.0, _prominence(spectrum_db, k * base))
        estimates.append((i + float(np.clip(delta, -0.5, 0.5))) / k)
        weights.append(weight)
    if not weights or sum(weights) == 0:
        return base
    hz = float(np.average(estimates, weights=weights))
    return round(hz, 2) if abs(hz - base) <= 0.5 else base


class _Meters:
    """What the pipeline measures of a stream: SNR histogram, loudness, peak."""

    def __init__(self, channels: int, sr: int) -> None:
        self.framer = _Framer(channels, max(1, round(_FRAME_S * sr)))
        self.powers = _PowerHistogram(channels)
        self.loudness = _LoudnessMeter(channels, sr)
        self.peak = np.zeros(channels)
        self.quiet: _NoiseSegments | None = None
        self.spectrum: _HumSpectrum | None = None

    def push(self, x: np.ndarray) -> None:
        if x.shape[1] == 0:
            return
        frames = self.framer.push(x)
        powers = np.mean(np.square(frames), axis=2)
        self.powers.add(powers)
        if self.quiet is not None:
            self.quiet.push(powers)
        if self.spectrum is not None:
            self.spectrum.push(x)
        self.loudness.push(x)
        np.maximum(self.peak, np.abs(x).max(axis=1), out=self.peak)

    def finish(self) -> None:
        """Count a last partial short frame (a file shorter than one frame has one)."""
        rest = self.framer.rest
        if rest.shape[1] and self.powers.total() == 0:
            self.powers.add(np.mean(np.square(rest), axis=1, keepdims=True))

    def snr_db(self, ch: int) -> float:
        return self.powers.snr_db(ch)

    def peak_dbfs(self) -> float:
        peak = float(self.peak.max()) if self.peak.size else 0.0
        return max(-120.0, 20 * math.log10(peak)) if peak > 0 else -120.0


# ------------------------------------------------------------------------------------------------
# Streaming stages: each takes (channels, n) blocks, returns what is ready, same total length
# ------------------------------------------------------------------------------------------------


class _Stage(Protocol):
    def push(self, x: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class _ZeroPhaseStage:
    """Per-channel IIR filters run forwards then backwards: zero phase, in blocks.

    A causal high-pass turns the phase of a voice's lowest harmonics, which costs up
    to 10 dB of SI-SDR on speech (the waveform, not what one hears). Forwards runs
    with carried state; backwards runs over what is pending, from a rest state
    ``lookahead`` frames past what it emits, far enough for the filter's impulse
    response to have died out (below -120 dB), so the blocks join seamlessly. The
    magnitude response is the filter's, squared (a 4th-order high-pass acts as an
    8th-order one; a notch is twice as deep).
    """

    def __init__(self, sos: Sequence[np.ndarray | None], sr: int) -> None:
        self._sos = list(sos)
        self._zi = [None if s is None else np.zeros((s.shape[0], 2)) for s in self._sos]
        self._lookahead = max(_settling_frames(s, sr) for s in self._sos if s is not None)
        # Backwards passes run over at least this much new audio: their cost stays a
        # small multiple of the forward pass's.
        self._batch = max(self._lookahead, round(10 * sr))
        self._pending = np.zeros((len(self._sos), 0), np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        from scipy import signal as sps

        forward = np.array(x, dtype=np.float64, copy=True)
        for ch, sos in enumerate(self._sos):
            if sos is not None and x.shape[1]:
                forward[ch], self._zi[ch] = sps.sosfilt(sos, forward[ch], zi=self._zi[ch])
        self._pending = np.concatenate([self._pending, forward.astype(np.float32)], axis=1)
        ready = self._pending.shape[1] - self._lookahead
        if ready < self._batch:
            return np.zeros((len(self._sos), 0), np.float32)
        return self._backwards(ready)

    def flush(self) -> np.ndarray:
        return self._backwards(self._pending.shape[1])

    def _backwards(self, ready: int) -> np.ndarray:
        from scipy import signal as sps

        out = np.array(self._pending[:, :ready], dtype=np.float32, copy=True)
        for ch, sos in enumerate(self._sos):
            if sos is not None and self._pending.shape[1]:
                y = sps.sosfilt(sos, self._pending[ch, ::-1].astype(np.float64))[::-1]
                out[ch] = y[:ready]
        self._pending = self._pending[:, ready:]
        return out


def _settling_frames(sos: np.ndarray, sr: int) -> int:
    """Frames until the filter's impulse response stays below -120 dB (at most 10 s)."""
    from scipy import signal as sps

    n = round(10 * sr)
    impulse = np.zeros(n)
    impulse[0] = 1.0
    response = np.abs(sps.sosfilt(sos, impulse))
    above = np.flatnonzero(response > 1e-6 * response.max())
    return int(min(n, above[-1] + 1 + round(0.01 * sr))) if above.size else round(0.01 * sr)


def _filters(sr: int, highpass_hz: float | None, order: int, hum_hz: float | None,
             harmonics: int) -> np.ndarray | None:
    """The high-pass and hum notches as one cascade of second-order sections."""
    from scipy import signal as sps

    sections = []
    if highpass_hz is not None:
        sections.append(sps.butter(order, highpass_hz, "highpass", fs=sr, output="sos"))
    if hum_hz is not None:
        for k in range(1, harmonics + 1):
            if k * hum_hz >= 0.45 * sr:
                break
            b, a = sps.iirnotch(k * hum_hz, _HUM_Q, fs=sr)
            sections.append(sps.tf2sos(b, a))
    return np.vstack(sections) if sections else None


@dataclass
class _Gate:
    """Noise reduction settings of one channel: its effective parameters and noise profile.

    ``blend`` mixes in a second gate's output with a weight (the auto mode, at very low
    SNR, averages the stationary and the non-stationary gates: their errors differ).
    """

    params: EnhanceParams
    noise: np.ndarray | None
    blend: tuple[EnhanceParams, float] | None = None

    def all_params(self) -> list[EnhanceParams]:
        """Every gate's parameters."""
        return [self.params] + ([self.blend[0]] if self.blend else [])


class _GateStage:
    """noisereduce on overlapping chunks: context on both sides, discarded; cross-faded seams.

    Chunk ``k`` yields the output frames ``[k*C - X, (k+1)*C)`` from the input
    ``[k*C - X - P, (k+1)*C + P)``, where ``C`` is the chunk, ``P`` the context and
    ``X`` the cross-fade; its first ``X`` frames are faded in over the previous
    chunk's last ``X``. Memory: about ``C + 2P + X`` frames per channel.
    """

    def __init__(self, sr: int, gates: Sequence[_Gate | None], chunk: int) -> None:
        self._sr = sr
        self._gates = list(gates)
        self._channels = len(gates)
        context = 0
        for p in (q for g in gates if g is not None for q in g.all_params()):
            win = p.win_length or p.n_fft
            smooth = 0 if p.time_mask_smooth_ms is None else round(
                p.time_mask_smooth_ms / 1000 * sr)
            need = 2 * win + smooth
            if not p.stationary:  # the running average reaches back (and forth) this far
                need = max(need, math.ceil(p.time_constant_s * sr))
            context = max(context, need)
        # Chunk, context and fade are whole hops, so that every segment starts on the same
        # STFT grid as whole-file processing would: the gate's decisions then match it.
        hops = [p.hop_length or (p.win_length or p.n_fft) // 4
                for g in gates if g is not None for p in g.all_params()]
        hop = math.lcm(*hops) if hops else 1

        def whole_hops(n: int) -> int:
            return max(hop, -(-n // hop) * hop)

        self.context = whole_hops(context)
        self.fade = whole_hops(min(round(_FADE_S * sr), max(1, chunk // 4)))
        self.chunk = whole_hops(max(chunk, 2 * self.fade))
        t = (np.arange(self.fade) + 0.5) / self.fade
        self._fade_in = (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)
        self._buf = np.zeros((self._channels, 0), np.float32)
        self._buf_start = 0
        self._pending: list[np.ndarray] = []
        self._total = 0
        self._k = 0
        self._tail: np.ndarray | None = None

    def push(self, x: np.ndarray) -> np.ndarray:
        self._pending.append(np.asarray(x, dtype=np.float32))
        self._total += x.shape[1]
        out = []
        while self._total >= (self._k + 1) * self.chunk + self.context:
            out.append(self._process(final=False))
        return np.concatenate(out, axis=1) if out else np.zeros((self._channels, 0), np.float32)

    def flush(self) -> np.ndarray:
        if self._total == 0:
            return np.zeros((self._channels, 0), np.float32)
        return self._process(final=True)

    def _process(self, *, final: bool) -> np.ndarray:
        k, c, x, p = self._k, self.chunk, self.fade, self.context
        o0 = max(0, k * c - x)
        o1 = self._total if final else (k + 1) * c
        s0, s1 = max(0, o0 - p), min(self._total, o1 + p)
        if self._pending:
            self._buf = np.concatenate([self._buf, *self._pending], axis=1)
            self._pending = []
        segment = self._buf[:, s0 - self._buf_start:s1 - self._buf_start]
        y = self._reduce(segment)[:, o0 - s0:o1 - s0]
        if self._tail is not None:
            n = min(x, y.shape[1])
            fade_in = self._fade_in[:n]
            y[:, :n] = self._tail[:, :n] * (1 - fade_in) + y[:, :n] * fade_in
        self._k += 1
        if final:
            self._tail = None
            self._buf = np.zeros((self._channels, 0), np.float32)
            return y
        self._tail, y = y[:, -x:].copy(), y[:, :-x]
        keep_from = max(0, (k + 1) * c - x - p)
        self._buf = self._buf[:, keep_from - self._buf_start:].copy()
        self._buf_start = keep_from
        return y

    def _reduce(self, segment: np.ndarray) -> np.ndarray:
        out = segment.copy()
        n = segment.shape[1]
        for ch, gate in enumerate(self._gates):
            if gate is None or n < (gate.params.win_length or gate.params.n_fft):
                continue
            out[ch] = self._gate(gate.params, gate.noise, segment[ch])
            if gate.blend is not None:
                params, weight = gate.blend
                out[ch] = ((1 - weight) * out[ch]
                           + weight * self._gate(params, None, segment[ch]))
        return out

    def _gate(self, p: EnhanceParams, noise: np.ndarray | None, x: np.ndarray) -> np.ndarray:
        import noisereduce

        win = p.win_length or p.n_fft
        # Zeros around the segment: scipy's STFT drops a last partial hop, and the
        # mask smoothing fades the first and last frames.
        hop = p.hop_length or win // 4
        pad = -(-(win + hop) // hop) * hop
        zeros = np.zeros(pad, np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):  # silence: 0/0, cleaned below
            reduced = noisereduce.reduce_noise(
                y=np.concatenate([zeros, x, zeros]), sr=self._sr,
                stationary=p.stationary, y_noise=noise, prop_decrease=p.prop_decrease,
                time_constant_s=p.time_constant_s, freq_mask_smooth_hz=p.freq_mask_smooth_hz,
                time_mask_smooth_ms=p.time_mask_smooth_ms,
                thresh_n_mult_nonstationary=p.thresh_n_mult_nonstationary,
                sigmoid_slope_nonstationary=p.sigmoid_slope_nonstationary,
                n_std_thresh_stationary=p.n_std_thresh_stationary,
                chunk_size=None, padding=0, n_fft=p.n_fft, win_length=p.win_length,
                hop_length=p.hop_length, clip_noise_stationary=False, use_tqdm=False,
                n_jobs=1)
        # The non-stationary gate divides by a running level that is 0 in digital silence.
        return np.nan_to_num(np.asarray(reduced[pad:pad + x.size], dtype=np.float32),
                             nan=0.0, posinf=0.0, neginf=0.0)


class _RNNoiseStage:
    """RNNoise (pyrnnoise) per channel: resampled to 48 kHz and back, delay compensated.

    RNNoise works on 10 ms frames (480 samples at 48 kHz) of int16-scaled floats
    and delays its output by `DELAY_48K` samples; that many output samples are
    dropped at the start, and the stream is flushed with zeros at the end, so the
    output lines up with the input sample for sample.
    """

    DELAY_48K = 960
    _RATE = 48000

    def __init__(self, sr: int, enabled: Sequence[bool]) -> None:
        import soxr

        rnnoise = _import_rnnoise()
        self._lib = rnnoise.lib
        self._frame = int(rnnoise.FRAME_SIZE)
        self._enabled = list(enabled)
        self._channels = len(enabled)
        self._sr = sr
        self._states = [rnnoise.create() if on else None for on in enabled]
        self._destroy = rnnoise.destroy
        self._up = (None if sr == self._RATE
                    else soxr.ResampleStream(sr, self._RATE, self._channels, dtype="float32"))
        self._down = (None if sr == self._RATE
                      else soxr.ResampleStream(self._RATE, sr, self._channels, dtype="float32"))
        self._rest = np.zeros((self._channels, 0), np.float32)
        self._to_drop = self.DELAY_48K
        self._in_frames = 0
        self._out_frames = 0
        self._buffer = np.zeros(self._frame, np.float32)

    def __del__(self) -> None:
        for state in getattr(self, "_states", []):
            if state is not None:
                self._destroy(state)

    def push(self, x: np.ndarray) -> np.ndarray:
        self._in_frames += x.shape[1]
        return self._emit(self._denoise(self._resample(self._up, x, last=False)), last=False)

    def flush(self) -> np.ndarray:
        tail = self._resample(self._up, np.zeros((self._channels, 0), np.float32), last=True)
        # Push the delayed samples (and a last partial frame) out with zeros.
        padding = np.zeros((self._channels, self.DELAY_48K + self._frame), np.float32)
        y = self._denoise(np.concatenate([tail, padding], axis=1))
        out = self._emit(y, last=True)
        missing = self._in_frames - self._out_frames
        if missing > 0:
            out = np.concatenate([out, np.zeros((self._channels, missing), np.float32)], axis=1)
        elif missing < 0:
            out = out[:, :out.shape[1] + missing]
        self._out_frames = self._in_frames
        return out

    def _resample(self, stream: Any, x: np.ndarray, *, last: bool) -> np.ndarray:
        if stream is None:
            return np.asarray(x, dtype=np.float32)
        y = stream.resample_chunk(np.ascontiguousarray(x.T, dtype=np.float32), last=last)
        return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1,
                                                                            self._channels).T)

    def _denoise(self, x: np.ndarray) -> np.ndarray:
        import ctypes

        data = np.concatenate([self._rest, x], axis=1)
        n = data.shape[1] // self._frame * self._frame
        self._rest = data[:, n:]
        out = data[:, :n] * 32768.0
        buffer = self._buffer
        pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        for ch, state in enumerate(self._states):
            if state is None:
                continue
            row = out[ch]
            for i in range(0, n, self._frame):
                buffer[:] = row[i:i + self._frame]
                self._lib.rnnoise_process_frame(state, pointer, pointer)
                row[i:i + self._frame] = buffer
        out /= 32768.0
        # Channels left alone get the same delay as the others.
        return out.astype(np.float32)

    def _emit(self, y48: np.ndarray, *, last: bool) -> np.ndarray:
        if self._to_drop:
            drop = min(self._to_drop, y48.shape[1])
            y48 = y48[:, drop:]
            self._to_drop -= drop
        y = self._resample(self._down, y48, last=last)
        room = self._in_frames - self._out_frames
        y = y[:, :max(0, room)] if not last else y
        self._out_frames += y.shape[1]
        return y


def _import_rnnoise() -> Any:
    try:
        return importlib.import_module("pyrnnoise.rnnoise")
    except (ImportError, OSError) as exc:
        raise ParameterError(
            f"backend 'rnnoise' needs pyrnnoise, which is not installed here ({exc}); "
            f"install it with: {RNNOISE_INSTALL}",
            errors=[f"backend 'rnnoise' is not available: install it with {RNNOISE_INSTALL}"],
        ) from exc


# ------------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Per-channel decisions, and the report's words for them."""

    params: list[EnhanceParams]
    gates: list[_Gate | None]
    clips: list[tuple[tuple[float, float], ...]]
    notched: list[bool]
    reasons: list[str]
    highpass_hz: float | None = None
    hum_hz: float | None = None
    hum_prominence_db: float | None = None
    rumble_share: float | None = None
    decisions: list[str] = field(default_factory=list)


@dataclass
class _Result:
    params: EnhanceParams
    sr: int
    channels: int
    frames: int
    plan: _Plan
    meters_in: _Meters
    meters_out: _Meters
    gain: float = 1.0
    gain_db: float = 0.0
    gain_limited: bool = False

    def report(self, seconds: float) -> EnhanceReport:
        loud_pre = self.meters_out.loudness.lufs()
        loud_out = loud_pre + self.gain_db if math.isfinite(loud_pre) and loud_pre > -120 \
            else loud_pre
        channel_reports = tuple(
            ChannelReport(channel=ch, snr_in_db=self.meters_in.snr_db(ch),
                          snr_out_db=self.meters_out.snr_db(ch), params=self.plan.params[ch],
                          noise_clips_s=self.plan.clips[ch], hum_notched=self.plan.notched[ch],
                          decision=self.plan.reasons[ch])
            for ch in range(self.channels))
        peak_out = self.meters_out.peak_dbfs()
        return EnhanceReport(
            params=self.params, sample_rate=self.sr, channels=self.channels,
            frames=self.frames, channel_reports=channel_reports,
            highpass_hz=self.plan.highpass_hz, hum_hz=self.plan.hum_hz,
            hum_prominence_db=self.plan.hum_prominence_db, rumble_share=self.plan.rumble_share,
            loudness_in_lufs=self.meters_in.loudness.lufs(), loudness_out_lufs=loud_out,
            gain_db=self.gain_db, gain_limited=self.gain_limited,
            peak_in_dbfs=self.meters_in.peak_dbfs(),
            peak_out_dbfs=peak_out + self.gain_db if peak_out > -120 else peak_out,
            decisions=tuple(self.plan.decisions), seconds=seconds)


class _Pipeline:
    """Analyse (when needed), plan, then stream: filters, noise reduction, meters."""

    def __init__(self, source: _Source, params: EnhanceParams,
                 progress: Progress | None) -> None:
        self.source = source
        self.p = params
        self.sr = int(source.sample_rate)
        self.channels = int(source.channels)
        self.frames = int(source.frames)
        self.progress = progress
        self._check()

    def _check(self) -> None:
        p, sr = self.p, self.sr
        errors = []
        win = p.win_length or p.n_fft
        hop = p.hop_length or win // 4
        if p.reduce and p.backend == "noisereduce":
            if p.freq_mask_smooth_hz is not None and int(
                    p.freq_mask_smooth_hz / (sr / (p.n_fft / 2))) < 1:
                errors.append(f"freq_mask_smooth_hz must be at least {sr / (p.n_fft / 2):g} Hz "
                              f"at {sr} Hz with n_fft={p.n_fft} (or null: no smoothing), "
                              f"not {p.freq_mask_smooth_hz:g}")
            if p.time_mask_smooth_ms is not None and int(
                    p.time_mask_smooth_ms / (hop / sr * 1000)) < 1:
                errors.append(f"time_mask_smooth_ms must be at least {hop / sr * 1000:g} ms "
                              f"at {sr} Hz with a hop of {hop} (or null: no smoothing), "
                              f"not {p.time_mask_smooth_ms:g}")
        if p.highpass_hz is not None and p.highpass_hz >= 0.45 * sr:
            errors.append(f"highpass_hz must be below {0.45 * sr:g} Hz at {sr} Hz, "
                          f"not {p.highpass_hz:g}")
        if p.noise_clip is not None and (p.reduce or p.auto):
            end = p.noise_clip[1]
            duration = self.frames / sr
            if p.noise_clip[0] >= duration or round((end - p.noise_clip[0]) * sr) < 1:
                errors.append(f"noise_clip {list(p.noise_clip)} is outside the audio "
                              f"(0 to {duration:.3f} s)")
        if errors:
            raise ParameterError(_summary(errors), errors=errors)
        if p.reduce and p.backend == "rnnoise":
            _import_rnnoise()

    def _report_progress(self, fraction: float) -> None:
        if self.progress is not None:
            self.progress(min(1.0, max(0.0, fraction)))

    # -- analysis and plan ------------------------------------------------------------------

    def _needs_analysis(self) -> bool:
        p = self.p
        needs_profile = p.reduce and p.backend == "noisereduce" and (
            p.auto or p.stationary) and p.noise_clip is None
        return p.auto or p.hum == "auto" or needs_profile

    def _new_meters(self, *, analysis: bool) -> _Meters:
        meters = _Meters(self.channels, self.sr)
        if analysis:
            meters.quiet = _NoiseSegments(self.channels)
            fmax = 60.0 * max(self.p.hum_harmonics, 5) + 20
            meters.spectrum = _HumSpectrum(self.channels, self.sr, fmax)
        return meters

    def _plan_filters(self, meters: _Meters | None) -> _Plan:
        """Decide the high-pass and the hum notches."""
        p, channels = self.p, self.channels
        plan = _Plan(params=[], gates=[], clips=[], notched=[False] * channels, reasons=[])
        plan.highpass_hz = p.highpass_hz
        if meters is not None and meters.spectrum is not None and meters.spectrum.segments:
            plan.rumble_share = meters.spectrum.rumble_share()
        if p.highpass_hz is not None:
            plan.decisions.append(f"high-pass at {p.highpass_hz:g} Hz, as requested")
        elif plan.rumble_share is not None and plan.rumble_share >= AUTO_RUMBLE_SHARE:
            # Not applied automatically: a causal high-pass shifts the phase of a voice's
            # fundamental, which costs more SI-SDR than removing rumble gains.
            plan.decisions.append(
                f"rumble: {plan.rumble_share:.0%} of the power is below "
                f"{_RUMBLE_BELOW_HZ:g} Hz; set highpass_hz (e.g. 80) to remove it")

        if p.hum in (50, 60):
            plan.hum_hz = float(cast(int, p.hum))
            plan.notched = [True] * channels
            plan.decisions.append(f"hum: notched {plan.hum_hz:g} Hz and its harmonics up to "
                                  f"the {p.hum_harmonics}th, as requested")
        elif p.hum == "auto" and meters is not None and meters.spectrum is not None:
            hz, prominence, hums = meters.spectrum.detect(p.hum_harmonics)
            plan.hum_prominence_db = prominence if math.isfinite(prominence) else None
            if hz is not None:
                plan.hum_hz = hz
                plan.notched = hums
                which = ("every channel" if all(hums) else "channel(s) " + ", ".join(
                    str(i) for i, h in enumerate(hums) if h))
                plan.decisions.append(
                    f"hum detected at {hz:g} Hz ({prominence:.0f} dB above the spectrum "
                    f"around it): notched it and its harmonics up to the "
                    f"{p.hum_harmonics}th on {which}")
            elif meters.spectrum.segments == 0:
                plan.decisions.append("hum: not looked for, the audio is shorter than 1 s")
            else:
                plan.decisions.append(
                    "hum: none detected (the strongest 50/60 Hz line stands "
                    f"{prominence:.0f} dB above its surroundings)")
        return plan

    def _plan_channels(self, plan: _Plan, meters: _Meters | None) -> _Plan:
        """Decide the noise reduction of each channel."""
        for ch in range(self.channels):
            gate, clips, reason, eff = self._plan_channel(ch, meters)
            hum = None if not plan.notched[ch] or plan.hum_hz is None else (
                50 if plan.hum_hz < 55 else 60)
            eff = eff.replace(auto=False, highpass_hz=plan.highpass_hz, hum=hum)
            plan.gates.append(gate)
            plan.clips.append(clips)
            plan.reasons.append(reason)
            plan.params.append(eff)
            plan.decisions.append(f"channel {ch}: {reason}" if self.channels > 1 else reason)
        return plan

    def _plan_channel(self, ch: int, meters: _Meters | None
                      ) -> tuple[_Gate | None, tuple[tuple[float, float], ...], str,
                                 EnhanceParams]:
        p = self.p
        if not p.reduce:
            return None, (), "noise reduction off, as requested", p
        win = p.win_length or p.n_fft
        if p.backend == "noisereduce" and self.frames < win:
            return None, (), (f"no noise reduction: {self.frames} samples are fewer than one "
                              f"STFT window ({win})"), p.replace(reduce=False)
        eff, reason = p, "as requested"
        if p.auto:
            assert meters is not None
            snr = meters.snr_db(ch)
            if snr >= AUTO_CLEAN_SNR_DB:
                return None, (), (f"left as is: estimated SNR {snr:.1f} dB is clean (at least "
                                  f"{AUTO_CLEAN_SNR_DB:g} dB)"), p.replace(reduce=False)
            if p.backend == "rnnoise":
                return _Gate(p, None), (), (f"RNNoise: estimated SNR {snr:.1f} dB (under "
                                            f"{AUTO_CLEAN_SNR_DB:g} dB)"), p
            prop, n_std, smooth = _auto_gate(snr)
            reason = (f"estimated SNR {snr:.1f} dB (under {AUTO_CLEAN_SNR_DB:g} dB): "
                      f"stationary gate against a noise profile, prop_decrease {prop:.2f}, "
                      f"threshold {n_std:.2f} standard deviations, mask smoothed over "
                      f"{smooth:g} ms and not across frequency")
            hop_ms = (p.hop_length or (p.win_length or p.n_fft) // 4) / self.sr * 1000
            eff = p.replace(stationary=True, prop_decrease=prop, n_std_thresh_stationary=n_std,
                            freq_mask_smooth_hz=None,
                            time_mask_smooth_ms=smooth if smooth >= hop_ms else None)
        elif p.backend == "rnnoise":
            return _Gate(p, None), (), "RNNoise, as requested", p
        if not eff.stationary:
            if p.noise_clip is not None:
                reason += " (noise_clip unused: the non-stationary gate takes no noise profile)"
            return _Gate(eff, None), (), f"non-stationary gate, {reason}", eff
        clips, gain = self._noise_clips(ch, meters)
        noise = self._noise_profile(ch, clips, eff) * np.float32(gain)
        where = ("noise_clip as given" if p.noise_clip is not None else
                 f"{len(clips)} quietest segment(s), {sum(e - s for s, e in clips):.2f} s")
        if gain > 1.0:
            where += (f", raised {20 * math.log10(gain):.1f} dB to the typical level of the "
                      "noise-only segments")
        if not p.auto:
            reason = f"stationary gate, {reason}"
        blend = None
        if p.auto and (weight := _auto_blend(meters.snr_db(ch) if meters else math.inf)) > 0:
            second = p.replace(auto=False, stationary=False, prop_decrease=1.0,
                               freq_mask_smooth_hz=None)
            blend = (second, weight)
            where += (f"; averaged with the non-stationary gate (weight {weight:.2f}): at so "
                      "low an SNR their errors differ")
        return _Gate(eff, noise, blend), clips, f"{reason}; noise profile: {where}", eff

    def _noise_clips(self, ch: int, meters: _Meters | None
                     ) -> tuple[tuple[tuple[float, float], ...], float]:
        """The noise-only clips of channel ``ch`` (seconds), and the gain their profile needs."""
        if self.p.noise_clip is not None:
            start, end = self.p.noise_clip
            return ((start, min(end, self.frames / self.sr)),), 1.0
        assert meters is not None and meters.quiet is not None
        frame = self.frames and max(1, round(_FRAME_S * self.sr))
        seg_s = _SEG_FRAMES * frame / self.sr
        count = int(np.clip(round(_NOISE_SHARE * self.frames / self.sr / seg_s),
                            _NOISE_MIN_SEGMENTS, _NOISE_MAX_SEGMENTS))
        floor = meters.powers.quietest_mean(ch, _NOISE_PERCENTILE / 100)
        starts, gain = meters.quiet.pick(ch, count, floor)
        if not starts:  # shorter than one segment: all of it
            return ((0.0, self.frames / self.sr),), 1.0
        return tuple((s * frame / self.sr, (s + _SEG_FRAMES) * frame / self.sr)
                     for s in starts), gain

    def _noise_profile(self, ch: int, clips: Sequence[tuple[float, float]],
                       params: EnhanceParams) -> np.ndarray:
        """The clips of channel ``ch``, filtered as the signal will be, joined by short fades."""
        sr = self.sr
        lead = round(1.0 * sr)  # let the filters settle before the clip
        fade = max(1, round(0.004 * sr))
        parts: list[np.ndarray] = []
        for start_s, end_s in clips:
            start, end = round(start_s * sr), min(self.frames, round(end_s * sr))
            first = max(0, start - lead)
            x = np.asarray(self.source.read(first, end - first)[ch], dtype=np.float32)
            sos = _filters(sr, self._highpass, params.highpass_order,
                           self._hum_hz if self._notched[ch] else None,
                           params.hum_harmonics)
            if sos is not None:  # zero phase, as the signal is filtered
                from scipy import signal as sps

                x = sps.sosfiltfilt(sos, x, padlen=min(x.size - 1, 3 * 2 * sos.shape[0]))
                x = x.astype(np.float32)
            parts.append(x[start - first:])
        joined = parts[0]
        for part in parts[1:]:
            n = min(fade, joined.size, part.size)
            t = (np.arange(n) + 0.5) / n
            mix = joined[-n:] * np.cos(0.5 * np.pi * t) + part[:n] * np.sin(0.5 * np.pi * t)
            joined = np.concatenate([joined[:-n], mix.astype(np.float32), part[n:]])
        return joined

    # -- the passes -------------------------------------------------------------------------------

    def run(self, sink: Callable[[np.ndarray], None], *, final_pass: bool) -> _Result:
        """Analyse if needed, then process everything into ``sink``; the gain is computed."""
        self._report_progress(0.0)
        analysis = self._needs_analysis()
        end = 0.9 if final_pass else 1.0
        start = 0.0
        meters_in = self._new_meters(analysis=analysis)
        if analysis:
            start = 0.2 * end
            done = 0
            for block in self.source.blocks(_BLOCK_FRAMES):
                meters_in.push(block)
                done += block.shape[1]
                self._report_progress(start * done / max(1, self.frames))
            meters_in.finish()
        # The plan needs the filters to build noise profiles; set them first.
        self._highpass: float | None = None
        self._hum_hz: float | None = None
        self._notched = [False] * self.channels
        plan = self._plan_filters(meters_in if analysis else None)
        self._highpass, self._hum_hz, self._notched = plan.highpass_hz, plan.hum_hz, plan.notched
        plan = self._plan_channels(plan, meters_in if analysis else None)
        stages: list[_Stage] = []
        sos = [(_filters(self.sr, plan.highpass_hz, self.p.highpass_order,
                         plan.hum_hz if plan.notched[ch] else None, self.p.hum_harmonics))
               for ch in range(self.channels)]
        if any(s is not None for s in sos):
            stages.append(_ZeroPhaseStage(sos, self.sr))
        if any(g is not None for g in plan.gates):
            if self.p.backend == "rnnoise":
                stages.append(_RNNoiseStage(self.sr, [g is not None for g in plan.gates]))
            else:
                chunk = round(self.p.chunk_s * self.sr)
                stages.append(_GateStage(self.sr, plan.gates, chunk))
        meters_out = _Meters(self.channels, self.sr)
        done = 0
        for block in self.source.blocks(_BLOCK_FRAMES):
            if not analysis:
                meters_in.push(block)
            y = block
            for stage in stages:
                y = stage.push(y)
            self._emit(y, meters_out, sink)
            done += block.shape[1]
            self._report_progress(start + (end - start) * done / max(1, self.frames))
        for i, stage in enumerate(stages):  # flush in order, through the later stages
            y = stage.flush()
            for later in stages[i + 1:]:
                y = later.push(y)
            self._emit(y, meters_out, sink)
        if not analysis:
            meters_in.finish()
        meters_out.finish()
        result = _Result(self.p, self.sr, self.channels, self.frames, plan, meters_in,
                         meters_out)
        self._gain(result)
        return result

    @staticmethod
    def _emit(y: np.ndarray, meters: _Meters, sink: Callable[[np.ndarray], None]) -> None:
        if y.shape[1]:
            y = np.asarray(y, dtype=np.float32)
            meters.push(y)
            sink(y)

    def _gain(self, result: _Result) -> None:
        target = self.p.loudness_lufs
        if target is None:
            return
        measured = result.meters_out.loudness.lufs()
        peak = result.meters_out.peak_dbfs()
        decisions = result.plan.decisions
        if not math.isfinite(measured):
            decisions.append("loudness: not normalised, the audio is shorter than 0.4 s")
            return
        if measured <= -120 or peak <= -120:
            decisions.append("loudness: not normalised, the output is silent")
            return
        gain_db = target - measured
        limit = _PEAK_CEILING_DBFS - peak - 1e-3  # a hair under: float32 rounding
        if gain_db > limit:
            decisions.append(
                f"loudness: {measured:.1f} LUFS; the gain to reach {target:g} LUFS "
                f"({gain_db:+.1f} dB) would put the peak above {_PEAK_CEILING_DBFS:g} dBFS, "
                f"so {limit:+.1f} dB was applied")
            gain_db = limit
            result.gain_limited = True
        else:
            decisions.append(f"loudness: {measured:.1f} LUFS to {target:g} LUFS, "
                             f"gain {gain_db:+.1f} dB")
        result.gain_db = gain_db
        result.gain = 10 ** (gain_db / 20)


def _auto_blend(snr_db: float) -> float:
    """Weight of the non-stationary gate in the auto mode: 0.5 up to 3 dB, 0 from 6 dB.

    Measured (``benchmarks/enhance.py``): at -5 dB pink noise the stationary gate
    alone fell 0.6 dB of SI-SDR short of noisereduce's defaults on one clip in three;
    the average of both gates beat them on every clip, and at 5 dB and above the
    stationary gate alone is best.
    """
    low, high = AUTO_BLEND_SNR_DB
    return 0.5 * float(np.clip((high - snr_db) / (high - low), 0.0, 1.0))


def _auto_gate(snr_db: float) -> tuple[float, float, float]:
    """The auto mode's gate settings for an estimated SNR (see the ``AUTO_*`` constants).

    Returns ``(prop_decrease, n_std_thresh_stationary, time_mask_smooth_ms)``.
    """

    def ramp(low: float, high: float) -> float:
        return float(np.clip((snr_db - low) / (high - low), 0.0, 1.0))

    prop = AUTO_MAX_PROP - ramp(AUTO_FULL_SNR_DB, AUTO_CLEAN_SNR_DB) * (
        AUTO_MAX_PROP - AUTO_MIN_PROP)
    n_std = AUTO_MAX_STD - ramp(AUTO_LOW_SNR_DB, AUTO_HIGH_SNR_DB) * (AUTO_MAX_STD
                                                                      - AUTO_MIN_STD)
    slow, fast = AUTO_TIME_SMOOTH_MS
    smooth = slow - ramp(AUTO_LOW_SNR_DB, AUTO_FULL_SNR_DB) * (slow - fast)
    return round(prop, 3), round(n_std, 3), round(smooth, 1)
