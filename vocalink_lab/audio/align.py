"""Align the recordings of one take: where each starts, and how fast its clock runs.

Several devices record the same take. Their start instants are known from clock sync
(``started_at``, typically within a millisecond) but may be missing or wrong, and every
device's sample clock drifts (phones: up to about 280 ppm against each other, typically
10-100 ppm). `align` measures both from the audio itself.

Conventions
-----------
All tracks are at one sample rate ``sr``. Track ``reference`` defines the timeline:
its sample ``m`` is at time ``m / sr``. For every track ``i``, sample ``n`` of track
``i`` is at reference time::

    t = offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))

so ``offsets_s[i]`` is where track ``i``'s first sample falls on the reference timeline
(positive: track ``i`` started later than the reference), and ``drift_ppm[i] > 0``
means track ``i``'s clock runs fast: it records ``sr * (1 + drift_ppm[i] * 1e-6)``
samples per reference second. Resampling track ``i`` from that rate to ``sr`` and
delaying it by ``offsets_s[i]`` puts it on the reference timeline; that is what
`vocalink_lab.audio.merge` does.

`gcc_phat` follows the same direction: ``gcc_phat(a, b, sr).lag_s == d`` when
``a[n] ≈ g * b[n - d * sr]`` (``a`` is ``b`` delayed by ``d``), so a track's offset
is ``gcc_phat(reference, track, sr).lag_s``.

Internally everything is in samples (float, for sub-sample precision); seconds appear
only at the edges.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ParameterError
from .io import as_channels, as_tracks, resample

__all__ = ["COARSE_RATE", "Alignment", "Lag", "align", "gcc_phat"]

log = logging.getLogger(__name__)

Array = npt.NDArray[np.floating[Any]]  # float32 for whole tracks, float64 for windows
Progress = Callable[[float], None]

#: Rate (Hz) of the decimated signals of the coarse search.
COARSE_RATE = 4000
_FINE_WINDOW_S = 2.0  # fine windows, at the full rate
_PROBES = 3  # chunks of a track searched over the whole reference when there is no usable seed
_PROBE_CANDIDATES = 8
_PROBE_S = 20.0
_SILENCE = 1e-10  # mean square below this (-100 dBFS): nothing to correlate
_MIN_OVERLAP_S = 0.25
_MAX_STD = 1.0  # samples: a fine window less precise than this measures nothing
_LOBE_S = 1e-3  # a correlation peak's main lobe: not "another peak" for the confidence


# -- the cross-correlation core ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lag:
    """The delay between two signals found by `gcc_phat`.

    Attributes
    ----------
    lag_s : float
        ``d`` such that ``a[n] ≈ g * b[n - d * sr]``: positive when the common content
        comes later in ``a`` than in ``b``.
    samples : float
        The same in samples (``lag_s * sr``), sub-sample precision.
    confidence : float
        0..1: ``1 - next / peak``, where ``peak`` is the weighted cross-correlation's
        maximum and ``next`` the highest value within the searched range but more than
        1 ms from it and outside its main lobe (clipped at 0). About 0-0.15 for
        unrelated signals, 0.5-0.9 for one signal recorded twice with noise; 0 when the
        peak sits on the edge of the range or the range is too narrow to hold anything
        but the main lobe.
    """

    lag_s: float
    samples: float
    confidence: float


@dataclass(frozen=True, slots=True)
class _Peak:
    lag: float  # samples
    confidence: float


def _fast_len(n: int) -> int:
    """The smallest 5-smooth integer >= n (a fast FFT size)."""
    if n <= 16:
        return max(n, 1)
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _weight(g: npt.NDArray[np.complex128], beta: float) -> npt.NDArray[np.complex128]:
    """PHAT-beta: divide the cross-spectrum by its magnitude to the power ``beta``."""
    if beta == 0:
        return g
    mag = np.abs(g)
    top = float(mag.max()) if mag.size else 0.0
    if top == 0.0:
        return g
    return g / np.maximum(mag, 1e-9 * top) ** beta


def _xcorr(
    fa: npt.NDArray[np.complex128], b: Array, n: int, beta: float
) -> tuple[Array, npt.NDArray[np.complex128]]:
    """Weighted circular cross-correlation ``r[k] = sum a[m + k] b[m]`` and its spectrum."""
    g = _weight(fa * np.conj(np.fft.rfft(b, n)), beta)
    return np.fft.irfft(g, n), g


def _gcc(
    a: Array,
    b: Array,
    lo: int,
    hi: int,
    *,
    beta: float,
    refine: bool = True,
    fa: npt.NDArray[np.complex128] | None = None,
    n: int | None = None,
    lobe: int = 2,
) -> _Peak:
    """The lag ``k`` in ``lo..hi`` maximising ``sum a[m + k] b[m]`` (PHAT-beta weighted).

    ``fa`` (``rfft(a, n)``) may be passed when ``a`` is correlated with many ``b``.
    """
    la, lb = len(a), len(b)
    lo, hi = max(lo, -(lb - 1)), min(hi, la - 1)
    if hi < lo:
        return _Peak(0.0, 0.0)
    if n is None or fa is None:
        n = _fast_len(la + lb - 1)
        fa = np.fft.rfft(a, n)
    full, g = _xcorr(fa, b, n, beta)
    r = full[np.arange(lo, hi + 1) % n]
    i = int(np.argmax(r))
    peak = float(r[i])
    if peak <= 0.0 or not math.isfinite(peak):
        return _Peak(float(lo + i), 0.0)
    confidence = _confidence(r, i, lobe)
    if i == 0 or i == len(r) - 1:
        return _Peak(float(lo + i), 0.0)  # the true peak may lie outside the range
    frac = _parabolic(r[i - 1], r[i], r[i + 1])
    lag = lo + i + frac
    if refine:
        lag = _newton(g, n, lo + i, lag)
    return _Peak(lag, confidence)


def _confidence(r: Array, i: int, lobe: int) -> float:
    """``1 - next / peak``: ``next`` is the highest value outside the peak's main lobe."""
    left = i
    while left > 0 and (i - left < lobe or r[left - 1] < r[left]):
        left -= 1
    right = i
    while right < len(r) - 1 and (right - i < lobe or r[right + 1] < r[right]):
        right += 1
    rest = np.concatenate([r[:left], r[right + 1:]])
    if rest.size == 0:
        return 0.0
    return float(np.clip(1.0 - max(float(rest.max()), 0.0) / float(r[i]), 0.0, 1.0))


def _parabolic(ym: float, y0: float, yp: float) -> float:
    den = ym - 2 * y0 + yp
    if den >= 0:
        return 0.0
    return float(np.clip(0.5 * (ym - yp) / den, -0.5, 0.5))


def _newton(g: npt.NDArray[np.complex128], n: int, k0: int, start: float) -> float:
    """Maximise the band-limited (exactly interpolated) correlation near integer lag ``k0``.

    ``r(t) = Re sum_k w_k g_k exp(2j pi k t / n)`` is the continuous-lag correlation whose
    samples at integer ``t`` are the DFT's; parabolic interpolation of those samples is
    biased towards integers by up to about 0.1 sample, this is not.
    """
    omega = 2 * np.pi * np.arange(len(g)) / n
    wg = g.copy()
    wg[1:] *= 2.0
    if n % 2 == 0:
        wg[-1] /= 2.0
    t = start
    for _ in range(8):
        e = wg * np.exp(1j * omega * t)
        d1 = -float(np.dot(omega, e.imag))
        d2 = -float(np.dot(omega * omega, e.real))
        if d2 >= 0:
            return start
        step = d1 / d2
        t = float(np.clip(t - step, k0 - 1.0, k0 + 1.0))
        if abs(step) < 1e-5:
            break
    return t


def gcc_phat(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    sr: float,
    *,
    max_lag_s: float | None = None,
    center_s: float = 0.0,
    beta: float = 0.8,
    highpass_hz: float | None = 60.0,
) -> Lag:
    """Delay of ``a`` relative to ``b`` by generalised cross-correlation (PHAT-beta).

    The cross-spectrum ``A(f) B*(f)`` is divided by its magnitude to the power ``beta``
    before the inverse FFT. ``beta = 1`` is classic PHAT: it whitens the signals, so the
    correlation peak is sharp whatever their spectra (speech is dominated by its low
    frequencies, whose broad correlation peak is hard to place), and gains and
    microphone colouring do not matter. But PHAT also gives full weight to frequency
    bins that hold only each device's own noise; ``beta = 0.8`` (the default, "PHAT-beta",
    Donohue et al. 2007) keeps most of the sharpening while letting bins with more
    energy count more. Measured here on 3 s of speech at 48 kHz with white noise at
    10 dB SNR, it separated the confidence of related pairs (0.76-0.79) from unrelated
    ones (0.01-0.03) best among beta = 1, 0.8, 0.6, 0.4 and 0.

    The peak is then refined below one sample on the overlapping parts of ``a`` and
    ``b``, re-aligned at that lag: their cross-spectrum is averaged over short segments
    (Welch), which estimates each frequency's coherence, and weighted by
    ``γ² / (1 - γ²)`` (the maximum-likelihood weighting, which PHAT cannot apply without
    aligned segments); the lag maximising the band-limited (exactly interpolated)
    correlation is found by Newton's method.

    Parameters
    ----------
    a, b : array_like, shape (frames,) or (channels, frames)
        Signals at the same rate; channels are averaged.
    sr : float
        Sample rate in Hz.
    max_lag_s : float, optional
        Search only ``center_s - max_lag_s <= lag <= center_s + max_lag_s``; every lag
        with some overlap by default.
    center_s : float
        Centre of the searched range.
    beta : float
        Weighting exponent, 0 (plain cross-correlation) to 1 (PHAT).
    highpass_hz : float or None
        Both signals are high-passed here first (4th-order Butterworth): rumble and DC
        carry no timing. None: no filter.

    Returns
    -------
    Lag
        ``lag_s`` such that ``a[n] ≈ g * b[n - lag_s * sr]``, and a confidence in 0..1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> b = rng.standard_normal(8000)
    >>> a = np.concatenate([np.zeros(100), b])[:8000]
    >>> round(gcc_phat(a, b, 8000).samples, 3)
    100.0
    """
    errors = []
    if not sr > 0:
        errors.append(f"sr must be positive, not {sr}")
    if max_lag_s is not None and not max_lag_s >= 0:
        errors.append(f"max_lag_s must be >= 0, not {max_lag_s}")
    if not 0 <= beta <= 1:
        errors.append(f"beta must be in 0..1, not {beta}")
    xa: Array = np.zeros(0)
    xb: Array = np.zeros(0)
    if errors:
        highpass_hz = None
    for name, x in (("a", a), ("b", b)):
        try:
            mono = _highpass(_mono(as_channels(x, name=name)), float(sr), highpass_hz)
        except ParameterError as exc:
            errors.extend(exc.errors)
            continue
        if mono.size == 0:
            errors.append(f"{name} is empty")
        if name == "a":
            xa = mono
        else:
            xb = mono
    if errors:
        raise ParameterError("invalid gcc_phat parameters", errors=errors)
    lo, hi = -(len(xb) - 1), len(xa) - 1
    if max_lag_s is not None:
        lo = max(lo, math.floor((center_s - max_lag_s) * sr))
        hi = min(hi, math.ceil((center_s + max_lag_s) * sr))
    lobe = max(2, math.ceil(_LOBE_S * sr))
    peak = _gcc(xa, xb, lo, hi, beta=beta, lobe=lobe)
    lag = peak.lag
    if peak.confidence > 0:
        refined = _fine_lag(xa, xb, peak.lag, lobe, sr)
        if refined is not None and abs(refined[0] - peak.lag) <= lobe:
            lag = refined[0]
    return Lag(lag / sr, lag, peak.confidence)


# -- alignment of a take ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alignment:
    """Where each track of a take sits on the reference track's timeline.

    Track ``i``'s sample ``n`` is at reference time
    ``offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))`` seconds.

    Attributes
    ----------
    offsets_s : tuple of float
        Reference time of each track's first sample (0 for the reference).
    drift_ppm : tuple of float
        How fast each track's clock runs against the reference's (positive: faster,
        more samples per reference second).
    confidence : tuple of float
        0..1 per track (1 for the reference): the mean over the analysis windows that
        hold sound of each window's `Lag.confidence`, a window whose lag disagrees with
        the fitted offset and drift counting 0.
    method : tuple of str
        How each value was obtained: ``"reference"``, ``"xcorr"`` (measured on the audio),
        ``"seed"`` (the audio gave no confident answer: the seed was kept, drift 0) or
        ``"none"`` (neither audio nor seed: offset 0, drift 0).
    reference : int
        Index of the reference track.
    sr : float
        Sample rate the tracks were aligned at.
    notes : tuple of str
        Per track, what happened when it is worth saying ("" otherwise).
    """

    offsets_s: tuple[float, ...]
    drift_ppm: tuple[float, ...]
    confidence: tuple[float, ...]
    method: tuple[str, ...]
    reference: int
    sr: float
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.offsets_s)
        if not self.notes:
            object.__setattr__(self, "notes", ("",) * n)
        lengths = {len(self.drift_ppm), len(self.confidence), len(self.method), len(self.notes)}
        if lengths != {n}:
            raise ParameterError("an Alignment needs one offset, drift, confidence, method "
                                 "and note per track")
        if not 0 <= self.reference < max(n, 1):
            raise ParameterError(f"reference {self.reference} is not one of {n} tracks")

    def __len__(self) -> int:
        return len(self.offsets_s)

    @classmethod
    def from_seeds(
        cls, seeds_s: Sequence[float | None] | None, n: int, *, sr: float, reference: int = 0
    ) -> Alignment:
        """An alignment taken from clock metadata alone (no drift).

        Parameters
        ----------
        seeds_s : sequence of float or None, optional
            Start instants (e.g. ``started_at`` in server time); only their differences
            from the reference's matter. A missing one (or all) means offset 0.
        n : int
            Number of tracks.
        sr : float
            Sample rate.
        reference : int
            Index of the reference track.
        """
        seeds = _relative_seeds(seeds_s, n, reference)
        offsets = tuple(0.0 if s is None else s for s in seeds)
        methods = tuple("reference" if i == reference else "none" if s is None else "seed"
                        for i, s in enumerate(seeds))
        confidence = tuple(1.0 if i == reference else 0.0 for i in range(n))
        return cls(offsets, (0.0,) * n, confidence, methods, reference, sr)

    def to_reference(self, track: int, samples: npt.ArrayLike) -> Array:
        """Reference time (seconds) of sample indices ``samples`` of track ``track``."""
        rate = self.sr * (1 + self.drift_ppm[track] * 1e-6)
        return np.asarray(self.offsets_s[track] + np.asarray(samples, dtype=np.float64) / rate)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the attributes, tuples as lists."""
        return {
            "offsets_s": list(self.offsets_s),
            "drift_ppm": list(self.drift_ppm),
            "confidence": list(self.confidence),
            "method": list(self.method),
            "notes": list(self.notes),
            "reference": self.reference,
            "sr": self.sr,
        }


@dataclass(frozen=True, slots=True)
class _Params:
    sr: float
    rc: float  # coarse rate
    beta: float
    windows: int
    window_c: int  # coarse window, coarse samples
    window_f: int  # fine window, full-rate samples
    drift: bool
    max_drift: float  # ppm
    min_confidence: float


@dataclass(frozen=True, slots=True)
class _Fit:
    a: float  # reference position (samples) of the track's sample 0
    b: float  # reference samples per track sample: 1 / (1 + drift)
    confidence: float
    windows: int  # windows that held sound
    inliers: int


def _relative_seeds(
    seeds_s: Sequence[float | None] | None, n: int, reference: int
) -> list[float | None]:
    if seeds_s is None:
        return [None] * n
    ref = seeds_s[reference]
    if ref is None:
        return [None] * n
    return [None if s is None else float(s) - float(ref) for s in seeds_s]


def _mono(x: npt.NDArray[np.float32]) -> Array:
    return np.asarray(x.mean(axis=0) if x.shape[0] > 1 else x[0], dtype=np.float32)


def _highpass(x: Array, sr: float, hz: float | None) -> Array:
    """4th-order Butterworth high-pass (the same causal filter on every track: no relative delay).

    Rumble, handling noise and DC carry no timing, but hold most of the energy of some
    recordings; in short analysis segments they leak into every bin with the same phase
    in both tracks, which pulls the fine lag towards whatever the coarse stage said.
    """
    if hz is None or hz <= 0 or hz >= 0.45 * sr or x.size == 0:
        return x
    from scipy import signal as sps

    sos = sps.butter(4, hz, "highpass", fs=sr, output="sos")
    return np.asarray(sps.sosfilt(sos, x), dtype=np.float32)


def _segment(x: Array, start: int, length: int) -> Array:
    """``x[start:start + length]``, zero-padded where it runs off either end."""
    out = np.zeros(length)
    lo, hi = max(start, 0), min(start + length, len(x))
    if hi > lo:
        out[lo - start:hi - start] = x[lo:hi]
    return out


def _loud(x: Array) -> bool:
    return x.size > 0 and float(np.mean(np.square(x))) > _SILENCE


def _fit_line(
    x: Array, y: Array, w: Array, *, slope: bool, tol: tuple[float, float]
) -> tuple[float, float, npt.NDArray[np.bool_]]:
    """Robust line ``y = a + b x``: Theil-Sen, outliers dropped, weighted least squares.

    Theil-Sen (the median of pairwise slopes) ignores up to 29% of wild points, such
    as windows where an echo or a pause won the correlation; the least-squares refit on
    the points within ``clip(4 * 1.4826 * MAD, *tol)`` of that line then uses the
    precision of the good ones. ``slope=False`` fixes ``b = 1`` (no drift).
    """
    b = 1.0
    if slope and len(x) >= 3 and np.ptp(x) > 0:
        i, j = np.triu_indices(len(x), 1)
        dx = x[j] - x[i]
        ok = dx != 0
        b = float(np.median((y[j] - y[i])[ok] / dx[ok]))
    a = float(np.median(y - b * x))
    res = y - (a + b * x)
    mad = float(np.median(np.abs(res)))
    thr = float(np.clip(4 * 1.4826 * mad, *tol))
    inl = np.abs(res) <= thr
    for _ in range(2):
        xi, yi, wi = x[inl], y[inl], w[inl] + 1e-6
        if slope and inl.sum() >= 3 and np.ptp(xi) > 0:
            mx = float(np.average(xi, weights=wi))
            my = float(np.average(yi, weights=wi))
            b = float(np.sum(wi * (xi - mx) * (yi - my)) / np.sum(wi * (xi - mx) ** 2))
            a = my - b * mx
        elif inl.any():
            a = float(np.average(yi - b * xi, weights=wi))
        inl = np.abs(y - (a + b * x)) <= thr
    return a, b, inl


def _coarse(
    ref: Array, trk: Array, seed: float, half: int, p: _Params
) -> tuple[_Fit, list[tuple[int, float]]]:
    """Windows of ``trk`` searched in ``ref`` within ``half`` of the seeded lag (coarse rate).

    Returns the fitted line (coarse samples) and the inlier windows as
    ``(start, confidence)``.
    """
    win = min(p.window_c, len(trk))
    lo = max(0, math.floor(-seed))
    hi = min(len(trk), math.ceil(len(ref) - seed))
    if hi - lo < win:  # a short predicted overlap: one window over what there is
        lo, hi = (lo, hi) if hi - lo >= _MIN_OVERLAP_S * p.rc else (0, len(trk))
        win = min(win, hi - lo)
    count = p.windows if hi - lo > win else 1
    starts = np.unique(np.round(np.linspace(lo, hi - win, count)).astype(int))
    lobe = math.ceil(_LOBE_S * p.rc) + math.ceil(p.max_drift * 1e-6 * win)
    xs, ys, cs, used = [], [], [], []
    for s in starts:
        chunk = trk[s:s + win]
        r0 = math.floor(s + seed) - half
        seg = _segment(ref, r0, win + 2 * half)
        if not (_loud(chunk) and _loud(seg)):
            continue
        peak = _gcc(seg, chunk, 0, 2 * half, beta=p.beta, lobe=lobe, refine=False)
        xs.append(s + (win - 1) / 2)
        ys.append(r0 + peak.lag + (win - 1) / 2)
        cs.append(peak.confidence)
        used.append(int(s))
    if not xs:
        return _Fit(seed, 1.0, 0.0, 0, 0), []
    x, y, c = np.array(xs), np.array(ys), np.array(cs)
    a, b, inl = _fit_line(x, y, c, slope=p.drift, tol=(1.5, 4.0))
    fit = _Fit(a, b, float(c[inl].sum() / len(c)), len(c), int(inl.sum()))
    return fit, [(used[k], float(c[k])) for k in np.flatnonzero(inl)]


def _fine(
    ref: Array, trk: Array, coarse: _Fit, inliers: list[tuple[int, float]], windows: int,
    p: _Params,
) -> _Fit:
    """Full-rate GCC on short windows around the coarse line; the final robust line fit."""
    scale = p.sr / p.rc
    a0, b0 = coarse.a * scale, coarse.b  # the coarse line in full-rate samples
    drift0 = 1 / b0 - 1
    win = min(p.window_f, len(trk))
    guard = math.ceil(3 * scale) + 8
    margin = math.ceil(0.02 * p.sr)
    warp = abs(drift0) * win > 0.05
    xs, ys, cs, ws = [], [], [], []
    for start_c, conf in inliers:
        # the loudest fine window inside the coarse window
        span_lo = round(start_c * scale)
        span_hi = min(len(trk), round((start_c + p.window_c) * scale))
        s = _loudest(trk, span_lo, max(span_lo, span_hi - win), win)
        if warp:
            # read the track at the estimated drift: sample j of w is track sample s + j(1+d)
            raw = _segment(trk, s - margin, math.ceil((win + 2 * margin) * (1 + drift0)) + 2)
            w: Array = resample(raw, p.sr * (1 + drift0), p.sr)[margin:margin + win]
            first = s + margin * drift0  # the track position of w[0]
        else:
            w = trk[s:s + win]
            first = s
        track_pos = first + (len(w) - 1) / 2 * (1 + drift0 if warp else 1.0)
        found = _fine_lag(ref, w, a0 + b0 * first, guard, p.sr)
        if found is None or found[1] > _MAX_STD:
            continue
        xs.append(track_pos)
        ys.append(found[0] + (len(w) - 1) / 2)
        cs.append(conf)
        ws.append(1 / max(found[1], 0.01) ** 2)
    if not xs:
        return _Fit(a0, b0, 0.0, windows, 0)
    x, y, c = np.array(xs), np.array(ys), np.array(cs)
    a, b, inl = _fit_line(x, y, np.array(ws), slope=p.drift,
                          tol=(2.0, max(2.0, 5e-4 * p.sr)))
    return _Fit(a, b, float(c[inl].sum() / max(windows, 1)), windows, int(inl.sum()))


def _fine_lag(
    ref: Array, w: Array, predicted: float, guard: int, sr: float
) -> tuple[float, float] | None:
    """Reference position of ``w[0]`` within ``guard`` samples of ``predicted``, and its std.

    The windows are already aligned to a few samples, so the cross-spectrum can be
    averaged over short segments (Welch), which estimates each frequency's coherence
    ``γ²``; weighting by ``γ² / (1 - γ²) / |G|`` (Hannan-Thomson, the maximum-likelihood
    GCC weighting) counts bins where the two recordings share a signal and ignores bins
    holding only each device's noise. PHAT cannot tell those apart: on speech (energy
    below 4 kHz) with white noise at 48 kHz, most bins are noise, and PHAT's sub-sample
    estimate erred by up to 2-5 samples at 10 dB SNR where this one stays within 0.3.
    A second pass, re-centred on the first answer, removes the small bias of a residual
    shift within the segments. None when the two share no significant coherence.
    """
    if not _loud(w):
        return None
    nseg = 1 << max(6, math.ceil(math.log2(max(4 * guard, 0.005 * sr))))
    r0, search = round(predicted), guard
    found = None
    for _ in range(2):
        seg = _segment(ref, r0, len(w))
        if not _loud(seg):
            return None
        measured = _welch_lag(seg, w, search, nseg)
        if measured is None:
            return None
        found = (r0 + measured[0], measured[1])
        r0, search = round(found[0]), 2
    return found


def _welch_lag(a: Array, b: Array, search: int, nseg: int) -> tuple[float, float] | None:
    """The lag in ``-search..search`` of ``a`` relative to ``b`` (equal lengths), and its std.

    The std is the Cramér-Rao bound of the delay given the measured coherence,
    ``1 / sqrt(K * sum(w^2 γ² / (1 - γ²)))`` over ``K`` segments (Carter 1987): it
    weights the windows in the line fit. Only bins whose coherence is significant
    (above ``4 / K``, where unrelated signals reach less than 2% of the time) count:
    noise-only bins would otherwise add up to a false precision.
    """
    hop = nseg // 2
    count = (len(a) - nseg) // hop + 1 if len(a) >= nseg else 0
    if count < 8:  # too short to average: PHAT-weighted GCC, precision unknown
        peak = _gcc(a, b, -search, search, beta=1.0, lobe=2)
        return None if peak.confidence == 0.0 else (peak.lag, 0.5)
    index = np.arange(count)[:, None] * hop + np.arange(nseg)
    window = np.hanning(nseg)
    fa = np.fft.rfft(a[index] * window, axis=1)
    fb = np.fft.rfft(b[index] * window, axis=1)
    g = (fa * np.conj(fb)).mean(axis=0)
    saa = np.square(np.abs(fa)).mean(axis=0)
    sbb = np.square(np.abs(fb)).mean(axis=0)
    mag = np.abs(g)
    tiny = 1e-30 + 1e-12 * float(mag.max())
    biased = np.square(mag) / (saa * sbb + tiny)
    # unbiased: unrelated bins average to 1 / count, not 0
    coherence = np.clip((count * biased - 1) / (count - 1), 0.0, 0.99)
    coherence[biased < 4 / count] = 0.0
    snr = coherence / (1 - coherence)
    omega = np.pi * np.arange(len(g)) / (len(g) - 1)
    information = 2 * count * float(np.sum(omega * omega * snr))
    if information <= 0:
        return None
    g = g * (snr / (mag + tiny))
    r = np.fft.irfft(g, nseg)[np.arange(-search, search + 1) % nseg]
    i = int(np.argmax(r))
    if i == 0 or i == len(r) - 1 or r[i] <= 0:
        return None
    k0 = i - search
    lag = _newton(g, nseg, k0, k0 + _parabolic(r[i - 1], r[i], r[i + 1]))
    return lag, 1 / math.sqrt(information)


def _loudest(x: Array, lo: int, hi: int, win: int) -> int:
    """Start in ``lo..hi`` of the ``win``-long stretch of ``x`` with the most energy."""
    if hi <= lo:
        return lo
    starts = np.unique(np.linspace(lo, hi, 9).round().astype(int))
    energy = [float(np.sum(np.square(x[s:s + win]))) for s in starts]
    return int(starts[int(np.argmax(energy))])


class _Probe:
    """Searches chunks of a track over the whole reference (coarse rate): a seed from audio."""

    def __init__(self, ref: Array, p: _Params) -> None:
        self.ref = ref
        self.p = p
        self.length = max(1, round(_PROBE_S * p.rc))
        self._spectra: dict[int, npt.NDArray[np.complex128]] = {}

    def seed(self, trk: Array) -> tuple[float, float] | None:
        """(offset in coarse samples, confidence) or None when the track holds no sound."""
        win = min(self.length, len(trk))
        if win < 1 or len(self.ref) < 1:
            return None
        n = _fast_len(len(self.ref) + win - 1)
        if n not in self._spectra:
            self._spectra[n] = np.fft.rfft(self.ref, n)
        fa = self._spectra[n]
        candidates = np.unique(np.linspace(0, len(trk) - win, _PROBE_CANDIDATES).round()
                               .astype(int))
        energy = np.array([float(np.mean(np.square(trk[s:s + win]))) for s in candidates])
        order = [int(candidates[k]) for k in np.argsort(-energy) if energy[k] > _SILENCE]
        found = []
        lobe = math.ceil(_LOBE_S * self.p.rc) + math.ceil(self.p.max_drift * 1e-6 * win)
        for s in order[:_PROBES]:
            chunk = trk[s:s + win]
            peak = _gcc(self.ref, chunk, -(win // 2), len(self.ref) - win // 2,
                        beta=self.p.beta, refine=False, fa=fa, n=n, lobe=lobe)
            found.append((peak.lag - s, peak.confidence))
        if not found:
            return None
        # the candidate that most others agree with (within what drift can explain)
        tol = self.p.max_drift * 1e-6 * len(trk) + 2
        offsets = np.array([f[0] for f in found])
        confs = np.array([f[1] for f in found])
        support = [float(confs[np.abs(offsets - o) <= tol].sum()) for o in offsets]
        best = int(np.argmax(support))
        members = np.abs(offsets - offsets[best]) <= tol
        offset = float(np.median(offsets[members]))
        return offset, support[best] / max(len(found), 1)


def _validate(
    tracks: Sequence[npt.ArrayLike],
    sr: float,
    seeds_s: Sequence[float | None] | None,
    reference: int,
    numbers: dict[str, float],
) -> list[npt.NDArray[np.float32]]:
    errors: list[str] = []
    arrays: list[npt.NDArray[np.float32]] = as_tracks(tracks, errors)
    if isinstance(tracks, np.ndarray) and tracks.ndim == 1:
        tracks = []
    if not (isinstance(sr, int | float) and sr > 0 and math.isfinite(sr)):
        errors.append(f"sr must be a positive number, not {sr!r}")
    if seeds_s is not None:
        if len(seeds_s) != len(tracks):
            errors.append(f"seeds_s has {len(seeds_s)} entries for {len(tracks)} tracks")
        bad = [i for i, s in enumerate(seeds_s) if s is not None and not math.isfinite(s)]
        if bad:
            errors.append(f"seeds_s must be finite numbers or None (entries {bad})")
    if len(tracks) and not 0 <= reference < len(tracks):
        errors.append(f"reference must index one of the {len(tracks)} tracks, not {reference}")
    for name, value in numbers.items():
        if not (math.isfinite(value) and value > 0):
            errors.append(f"{name} must be positive, not {value}")
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)
    return arrays


def align(
    tracks: Sequence[npt.ArrayLike],
    sr: float,
    *,
    seeds_s: Sequence[float | None] | None = None,
    search_s: float = 0.5,
    drift: bool = True,
    reference: int = 0,
    max_drift_ppm: float = 500.0,
    windows: int = 12,
    window_s: float = 4.0,
    beta: float = 0.8,
    min_confidence: float = 0.2,
    highpass_hz: float | None = 60.0,
    progress: Progress | None = None,
) -> Alignment:
    """Find each track's offset and clock drift against the reference track.

    For each track, in two stages:

    1. Coarse, on signals decimated to `COARSE_RATE` (4 kHz): ``windows`` windows of
       ``window_s`` spread over the expected overlap are each searched in the reference
       within ``search_s`` (plus what ``max_drift_ppm`` can add over the track) of the
       seeded lag, by PHAT-beta cross-correlation (as `gcc_phat`); a robust line through
       their lags (Theil-Sen, outliers dropped, weighted least squares) gives offset and
       drift to about a coarse sample (0.25 ms). Without a usable seed (none given, or
       the seeded search found nothing confident), three loud 20 s chunks of the track
       are searched over the whole reference first (one FFT each, the reference's
       spectrum computed once) and their agreeing answer becomes the seed.
    2. Fine, at the full rate: a 2 s window (the loudest) inside each coarse window that
       agreed with the line, read at the coarse drift (resampled with soxr, so that the
       drift does not smear its correlation peak), is searched within a few samples of
       the coarse line by maximum-likelihood-weighted GCC (coherence from Welch
       averaging; see `gcc_phat`), which also gives each window's Cramér-Rao precision;
       the robust line through these sub-sample lags, weighted by precision, is the
       result.

    Confidence, per track: the mean over the coarse windows that hold sound of each
    window's `Lag.confidence` (peak against the next peak), a window whose lag the
    final line rejects (coarse or fine) counting 0.

    A track whose confidence stays below ``min_confidence`` keeps its seed (method
    ``"seed"``, drift 0), or offset 0 without one (``"none"``), and says so in ``notes``.

    Parameters
    ----------
    tracks : sequence of np.ndarray, each shape (frames,) or (channels, frames)
        The recordings, all at ``sr``; channels are averaged for the estimate. Gains
        may differ.
    sr : float
        Their sample rate in Hz.
    seeds_s : sequence of float or None, optional
        The take's clock metadata: each track's start instant in seconds on any common
        clock (e.g. ``started_at`` in server time). Only differences from the
        reference's matter: ``seeds_s[i] - seeds_s[reference]`` is the prior for
        ``offsets_s[i]``. ``None`` entries are tracks without a clock estimate.
    search_s : float
        How far (seconds) from its seed a track's offset may be.
    drift : bool
        Estimate clock drift; False assumes every clock runs at the reference's rate.
    reference : int
        Index of the track that defines the timeline.
    max_drift_ppm : float
        The largest drift to allow for when sizing search windows; a fitted drift
        beyond it is not trusted.
    windows : int
        Analysis windows per track.
    window_s : float
        Length of each coarse analysis window.
    beta : float
        PHAT-beta weighting exponent (see `gcc_phat`).
    min_confidence : float
        Below this, a track's measurement is not trusted.
    highpass_hz : float or None
        Every track is high-passed here first (see `gcc_phat`); None: no filter.
    progress : callable, optional
        Called with the fraction done (0..1) after each track.

    Returns
    -------
    Alignment
        ``offsets_s[i]``: reference time of track ``i``'s first sample;
        ``drift_ppm[i]``: track ``i``'s clock rate against the reference's; sample
        ``n`` of track ``i`` is at ``offsets_s[i] + n / (sr * (1 + drift_ppm[i] * 1e-6))``.

    Raises
    ------
    ParameterError
        With every invalid parameter listed.

    Examples
    --------
    >>> from vocalink_lab.audio.synth import speech_like
    >>> x = speech_like(20.0, 16000, seed=1)
    >>> late = x[8000:]  # started 0.5 s after the reference
    >>> round(align([x, late], 16000).offsets_s[1], 4)
    0.5
    """
    arrays = _validate(tracks, sr, seeds_s, reference,
                       {"search_s": search_s, "max_drift_ppm": max_drift_ppm,
                        "windows": windows, "window_s": window_s})
    errors = []
    if not 0 <= beta <= 1:
        errors.append(f"beta must be in 0..1, not {beta}")
    if not 0 <= min_confidence <= 1:
        errors.append(f"min_confidence must be in 0..1, not {min_confidence}")
    if errors:
        raise ParameterError("; ".join(errors), errors=errors)
    n = len(arrays)
    sr = float(sr)
    rc = float(min(COARSE_RATE, sr))
    p = _Params(sr=sr, rc=rc, beta=beta, windows=int(windows),
                window_c=max(1, round(window_s * rc)), window_f=max(1, round(_FINE_WINDOW_S * sr)),
                drift=drift, max_drift=max_drift_ppm, min_confidence=min_confidence)
    seeds = _relative_seeds(seeds_s, n, reference)
    if seeds_s is not None and seeds_s[reference] is None:
        log.warning("the reference track has no seed: aligning without seeds")

    mono = [_highpass(_mono(x), sr, highpass_hz) for x in arrays]
    coarse = [m if rc == sr else resample(m, sr, rc).astype(np.float64) for m in mono]
    probe = _Probe(coarse[reference], p)

    offsets, drifts, confs, methods, notes = [], [], [], [], []
    for i in range(n):
        if i == reference:
            offsets.append(0.0)
            drifts.append(0.0)
            confs.append(1.0)
            methods.append("reference")
            notes.append("")
        else:
            o, d, c, m, note = _align_one(mono[reference], mono[i], coarse[reference],
                                          coarse[i], seeds[i], search_s, probe, p)
            offsets.append(o)
            drifts.append(d)
            confs.append(c)
            methods.append(m)
            notes.append(note)
            if m != "xcorr":
                log.warning("track %d: %s", i, note)
        if progress is not None:
            progress((i + 1) / n)
    return Alignment(tuple(offsets), tuple(drifts), tuple(confs), tuple(methods), reference,
                     sr, tuple(notes))


def _align_one(
    ref_f: Array, trk_f: Array, ref_c: Array, trk_c: Array, seed_s: float | None,
    search_s: float, probe: _Probe, p: _Params,
) -> tuple[float, float, float, str, str]:
    """(offset_s, drift_ppm, confidence, method, note) of one track."""
    drift_slack = p.max_drift * 1e-6 * len(trk_c) if p.drift else 0.0
    best: _Fit | None = None
    note = ""
    if seed_s is not None:
        half = math.ceil(search_s * p.rc + drift_slack) + 2
        best = _measure(ref_f, trk_f, ref_c, trk_c, seed_s * p.rc, half, p)
    if best is None or best.confidence < p.min_confidence:
        found = probe.seed(trk_c)
        if found is not None and found[1] >= p.min_confidence / 2:
            half = math.ceil(drift_slack + 0.05 * p.rc) + 2
            fit = _measure(ref_f, trk_f, ref_c, trk_c, found[0], half, p)
            if best is None or fit.confidence > best.confidence:
                best = fit
                if seed_s is not None and fit.confidence >= p.min_confidence:
                    note = (f"the seed was {seed_s - fit.a / p.sr:+.3f} s off: "
                            "found by a search over the whole reference")
    conf = 0.0 if best is None else best.confidence
    if best is not None and conf >= p.min_confidence:
        drift_ppm = (1 / best.b - 1) * 1e6
        if abs(drift_ppm) <= p.max_drift:
            return best.a / p.sr, drift_ppm, conf, "xcorr", note
        conf = 0.0
        note = f"a drift of {drift_ppm:.0f} ppm is beyond max_drift_ppm; "
    else:
        note = ""
    if seed_s is not None:
        return seed_s, 0.0, conf, "seed", note + (
            f"confidence {conf:.2f} < {p.min_confidence}: kept the seed")
    return 0.0, 0.0, conf, "none", note + (
        f"confidence {conf:.2f} < {p.min_confidence} and no seed: offset 0")


def _measure(
    ref_f: Array, trk_f: Array, ref_c: Array, trk_c: Array, seed_c: float, half: int,
    p: _Params,
) -> _Fit:
    """Coarse, then fine alignment around ``seed_c`` (coarse samples); full-rate result."""
    fit_c, inliers = _coarse(ref_c, trk_c, seed_c, half, p)
    if not inliers or fit_c.confidence < p.min_confidence / 2:
        return _Fit(fit_c.a * p.sr / p.rc, fit_c.b, fit_c.confidence, fit_c.windows, 0)
    return _fine(ref_f, trk_f, fit_c, inliers, fit_c.windows, p)
