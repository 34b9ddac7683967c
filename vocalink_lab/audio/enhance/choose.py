"""The auto mode's choice of a noise reducer: a no-reference estimate of each one's result.

No clean reference exists in practice, so each candidate's output ``y`` is judged
against the input ``x`` and the other candidates' outputs only, on a few excerpts
(`Features`): how much of the input's loud frames it keeps, how much of its quiet
frames (the pauses: noise), the blind SNR of its output, the level of its residual
``x - y``, and how well it agrees with the other candidates (mean SI-SDR of each
against each). The candidates are the installed backends and averages of their
outputs (`COMBOS`: their errors differ, so an average often beats both, e.g.
RNNoise and DeepFilterNet3 on typing). A linear model per candidate maps the features
to an estimated SI-SDR gain in dB (`_MODELS`); it was fitted on the tuning part of the
held-out set (``benchmarks/_heldout.py``) only, by least squares that count an
over-estimate three times an under-estimate (choosing a candidate that then does
harm is what must not happen). The candidate with the highest estimate wins, unless
none is estimated to gain `CHOOSE_MIN_GAIN_DB`: the channel is then left as it is. A
candidate whose output's blind SNR is not `CHOOSE_MIN_SNR_GAIN_DB` above the input's
is never chosen (the model alone would rate an output of pure noise +5 dB: it has
learnt mostly which candidate suits which input SNR, and the features refine that).

RNNoise alone is not a candidate when DeepFilterNet3 is installed: on the tuning part
it failed badly on a few clips (-9 dB in a fan at 10 dB SNR, -21 dB in babble) that the
features did not tell apart; averaged with DeepFilterNet3 it is safe and the best on
typing and fans.

From `CHOOSE_GATE_SNR_DB` to `AUTO_CLEAN_SNR_DB` of blind SNR the gate is the only
candidate (`gate_only`). A channel whose blind SNR reads clean (`AUTO_CLEAN_SNR_DB`) is
left as it is, unless
RNNoise and DeepFilterNet3 both ran and their residuals correlate (at least
`CHOOSE_SHARED_RESIDUAL`): two different networks removing the same thing is a noise
the blind SNR missed (typing between silent pauses reads as clean), while on clean
speech each network's residual is its own distortion (correlation 0.1 to 0.3 on
the tuning part, 0.7 to 0.99 on typing at 10 dB SNR or less, 0.1 to 0.46 at 20 and
30 dB, where the networks would cost 2 to 20 dB).

Three safeties on top of the model, all chosen on the tuning part only (by trying the
rules on every clip's candidates, with SI-SDR and STOI against the clean speech), for
what the model cannot see: a candidate that removes speech.

- The voice taken for the noise (`_voice_removed`). In babble, DeepFilterNet3 now and
  then keeps a talker of the babble and removes the voice (babble at -5 and 0 dB: -6 to
  -14 dB of SI-SDR, STOI -0.26 to -0.44; averaged with the gate still -3.5 dB and -0.16),
  with features like its good clips'. What tells it: how much better a candidate keeps
  the input's loud frames than its quiet ones (`Features.contrast_db`). The gate keeps
  the voice over a noise floor (3 dB or more: `CHOOSE_GATE_CONTRAST_DB`); DeepFilterNet3
  keeping the loud frames no better than the pauses (under `CHOOSE_VOICE_CONTRAST_DB`)
  then removed the voice, and the networks and their averages are not candidates. On
  typing the loud frames are the clicks, which the gate leaves (contrast 0 to 2.4 dB):
  the rule stays off. It does not catch every such clip (one of the report part kept
  the loud frames 4.4 dB better): the next rule is what makes babble safe.
- A speech-like noise gets a fixed blend (`_babble`). In babble the estimate does not
  carry over (it rated DeepFilterNet3 +4.1 dB on a clip where it lost 0.2 dB, and its
  average with the gate +3.0 dB where that lost 3.5 dB), and whatever a network removes
  is partly speech. What tells babble: `follow`, how closely
  what a network removed follows, band by band, what the gate kept (0.37 to 0.9 on all
  96 babble clips of the tuning part; 0.2 or less on white and pink noise, about 0.5 at
  most on fans and hum). When it is at least `CHOOSE_FOLLOW` and the best estimate is
  under `CHOOSE_FOLLOW_BELOW_DB` (fans at -5 dB and hum at 10 dB follow up to 0.5 but
  are rated 8.5 dB or more; typing follows but reads clean; one fan clip at 10 dB gets
  the blend, and gains 1 dB more by it), the output is `CHOOSE_BABBLE_BLEND`: in
  mild babble half the gate's output and 45 % DeepFilterNet3's, in strong babble (where
  DeepFilterNet3 takes the voice) 40 % the gate's, 10 % DeepFilterNet3's and half the
  input. Each row is the blend of the three with the highest mean SI-SDR gain on the
  tuning part's babble clips of that strength (a grid of 5 % steps) among those that
  keep every clip's STOI within 0.006 of the input's and its SI-SDR gain above -0.3 dB;
  the ramp between them (`CHOOSE_FOLLOW_RAMP`) ends where a step would first fail that.
- Some of the input added back (`Choice.dry`), outside babble. The chosen output is
  ``(1 - dry) * y + dry * x`` (``x`` after the hum notches and high-pass, if any), with
  ``dry`` `CHOOSE_DRY` when the chosen candidate's estimated gain is under
  `CHOOSE_DRY_BELOW_DB` or its residual is under `CHOOSE_DRY_RESIDUAL_DB` of the input
  (a nearly clean input: the networks' distortion of the voice outweighs the noise they
  leave; white and pink noise at 10 dB SNR lost up to 0.015 of STOI, typing and hum at
  10 dB gain 0.3 to 1 dB with it), else 0. Under high noise with a large estimated gain
  nothing is added back: it would cap the gain (15 % of the input keeps the noise at
  most 16.5 dB down).

The tuning part for these rules was the held-out set's (96 noisy clips) and 80 more
babble clips of it (``per_case=20``, babble only; the rules were first chosen on 40 of
them and failed on the other 40: babble needs many clips). On those 176 clips, with the
three rules: babble +2.17 dB (the gate alone +1.42), keyboard +11.05, fan +8.57, hum
+12.64, pink +9.70, white +9.25; worst clip -0.27 dB, worst STOI change -0.0085. The
model's weights were not refitted.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .auto import AUTO_CLEAN_SNR_DB
from .stages import _OPTIONAL

__all__ = ["CANDIDATES", "CHOOSE_DRY", "CHOOSE_DRY_BELOW_DB", "CHOOSE_DRY_RESIDUAL_DB",
           "CHOOSE_BABBLE_BLEND", "CHOOSE_FOLLOW", "CHOOSE_FOLLOW_BELOW_DB", "CHOOSE_FOLLOW_RAMP",
           "CHOOSE_GATE_CONTRAST_DB", "CHOOSE_GATE_SNR_DB", "CHOOSE_MIN_GAIN_DB",
           "CHOOSE_MIN_SNR_GAIN_DB", "CHOOSE_SHARED_RESIDUAL", "CHOOSE_VOICE_CONTRAST_DB",
           "COMBOS", "NAMES", "Choice", "Features", "available",
           "choose", "combo_name", "features", "follow", "gate_only"]

#: The backends auto runs, in the order the report lists them.
CANDIDATES: tuple[str, ...] = ("noisereduce", "rnnoise", "deepfilternet")
#: Their names in the report.
NAMES = {"noisereduce": "gate", "rnnoise": "RNNoise", "deepfilternet": "DeepFilterNet3"}
_MODULES = {name: module for name, (module, _, _) in _OPTIONAL.items()}
#: A channel is left as it is unless a candidate is estimated to gain this much (dB).
CHOOSE_MIN_GAIN_DB = 0.5
#: A candidate must raise the blind SNR this much (dB) to be chosen (under the clean SNR).
CHOOSE_MIN_SNR_GAIN_DB = 1.0
#: A clean-reading channel is reduced only if the networks' residuals correlate this much.
CHOOSE_SHARED_RESIDUAL = 0.6
#: From this blind SNR up to `AUTO_CLEAN_SNR_DB`, the gate alone: nearly clean speech
#: loses SI-SDR through either network (at 20 dB SNR, 1 to 4 dB on the tuning part;
#: at 30 dB, 10 to 20 dB), and the model was fitted below it.
CHOOSE_GATE_SNR_DB = 20.0
#: The networks are not candidates when the gate keeps the input's loud frames this much
#: better than its pauses (dB; it found speech over a noise floor) while DeepFilterNet3
#: keeps them no better than `CHOOSE_VOICE_CONTRAST_DB` (it took the voice for the noise).
CHOOSE_GATE_CONTRAST_DB = 3.0
CHOOSE_VOICE_CONTRAST_DB = 0.0
#: The share of the input added back to the chosen output (`Choice.dry`) when its
#: estimated gain is under `CHOOSE_DRY_BELOW_DB` or its residual is under
#: `CHOOSE_DRY_RESIDUAL_DB` (the input was nearly clean: what the candidate took from
#: the voice matters more than the noise it left).
CHOOSE_DRY = 0.15
CHOOSE_DRY_BELOW_DB = 5.0
CHOOSE_DRY_RESIDUAL_DB = -9.0
#: A speech-like noise (babble): what a network removed follows what the gate kept
#: (`follow` at least `CHOOSE_FOLLOW`) and the chosen candidate's estimated gain is under
#: `CHOOSE_FOLLOW_BELOW_DB` (the estimate does not carry over to babble). The output is
#: then a fixed blend, `CHOOSE_BABBLE_BLEND`: shares of the gate's output, DeepFilterNet3's
#: and the input, the first row up to the first `CHOOSE_FOLLOW_RAMP`, the second from its
#: second, in a line between (the stronger the babble, the more of the voice a network
#: takes with it). Without DeepFilterNet3, the last two rows.
CHOOSE_FOLLOW = 0.35
CHOOSE_FOLLOW_BELOW_DB = 8.0
CHOOSE_FOLLOW_RAMP = (0.65, 0.85)
CHOOSE_BABBLE_BLEND: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "deepfilternet": ((0.5, 0.45, 0.05), (0.4, 0.1, 0.5)),
    "rnnoise": ((0.5, 0.0, 0.5), (0.3, 0.0, 0.7)),
}
_FOLLOW_BANDS_HZ = (150.0, 6000.0, 8)  # log-spaced bands: lowest edge, highest, how many
_FOLLOW_WINDOW_S = 0.032
_FRAME_S = 0.02
_LOUD_PERCENTILE, _QUIET_PERCENTILE = 70.0, 30.0
_EPS = 1e-12

Combo = tuple[str, ...]

#: Per candidate set: each candidate (backends whose outputs are averaged), its
#: intercept and its weight of the input's blind SNR (capped to 0..40 dB); then the
#: weights of `Features.vector`, shared. The first set is used when DeepFilterNet3 is
#: installed, the second otherwise; candidates with a backend not installed are skipped.
#: Fitted on the tuning part (96 noisy clips; see the module's text).
_MODELS: tuple[tuple[dict[Combo, tuple[float, float]], tuple[float, ...]], ...] = (
    ({("noisereduce",): (1.037, -0.0897),
      ("deepfilternet",): (-3.3437, -0.2126),
      ("noisereduce", "deepfilternet"): (2.9591, -0.3467),
      ("rnnoise", "deepfilternet"): (-4.5363, -0.1018),
      ("noisereduce", "rnnoise", "deepfilternet"): (1.6708, -0.2753)},
     (0.0019, 0.1277, 0.3176, 0.4984, 0.101)),
    ({("noisereduce",): (2.5941, -0.1424),
      ("rnnoise",): (-7.1694, -0.0632),
      ("noisereduce", "rnnoise"): (2.8147, -0.3037)},
     (0.3582, 0.118, 0.3019, 0.4742, 0.1595)),
)
#: Every candidate auto may try.
COMBOS: tuple[Combo, ...] = tuple(dict.fromkeys(c for m in _MODELS for c in m[0]))


def combo_name(combo: Sequence[str]) -> str:
    """A candidate's key in `Choice.scores` and the report: ``"rnnoise+deepfilternet"``."""
    return "+".join(combo)


def _label(combo: Sequence[str]) -> str:
    names = [NAMES[b] for b in combo]
    return names[0] if len(names) == 1 else " + ".join(names) + " (averaged)"


@dataclass(frozen=True, slots=True)
class Features:
    """What is measured of one candidate's output ``y`` against the input ``x`` (dB).

    Attributes
    ----------
    loud_kept_db : float
        Power of ``y`` over power of ``x`` in the input's loudest 30 % of 20 ms frames.
    quiet_kept_db : float
        The same in its quietest 30 % (the pauses: mostly noise).
    snr_out_db : float
        Blind SNR of ``y`` (as `vocalink_lab.audio.metrics.snr_estimate`), capped to 60.
    residual_db : float
        Power of ``x - y`` over power of ``x``.
    agree_db : float
        Mean SI-SDR of ``y`` against each other candidate's output (0 alone).
    """

    loud_kept_db: float
    quiet_kept_db: float
    snr_out_db: float
    residual_db: float
    agree_db: float

    @property
    def contrast_db(self) -> float:
        """How much better the loud frames are kept than the quiet ones (dB)."""
        return self.loud_kept_db - self.quiet_kept_db

    def vector(self) -> np.ndarray:
        """The features in the models' order."""
        return np.array([self.loud_kept_db, self.quiet_kept_db, self.snr_out_db,
                         self.residual_db, self.agree_db])


@dataclass(frozen=True, slots=True)
class Choice:
    """The auto mode's choice for one channel.

    Attributes
    ----------
    backends : tuple of str
        The chosen candidate: the backends whose outputs are averaged (one, usually
        more); empty to leave the channel as it is.
    scores : dict of str to float
        Estimated SI-SDR gain (dB) of every candidate tried, by `combo_name`.
    features : dict of str to Features
        What the estimates were made of, by `combo_name`.
    reason : str
        The choice in words, with every candidate's estimate.
    dry : float
        The share of the input added back: the output is ``(1 - dry)`` times the
        candidate's plus ``dry`` times the input (0: the candidate's alone).
    shares : tuple of float
        Each backend's share of the output, in the order of ``backends``, when they
        are not averaged evenly (a speech-like noise); empty otherwise.
    """

    backends: tuple[str, ...]
    scores: dict[str, float]
    features: dict[str, Features]
    reason: str
    dry: float = 0.0
    shares: tuple[float, ...] = ()

    def weights(self) -> tuple[float, ...]:
        """Each of `backends`' share of the output: `shares`, else what `dry` leaves, evenly."""
        return self.shares or tuple((1.0 - self.dry) / len(self.backends)
                                    for _ in self.backends)


def available() -> tuple[list[str], dict[str, str]]:
    """The candidates installed here, and why each other one is not.

    Returns
    -------
    names : list of str
        Those of `CANDIDATES` whose package imports (the gate always).
    missing : dict of str to str
        The others, with the import error.
    """
    names, missing = [], {}
    for name in CANDIDATES:
        module = _MODULES.get(name)
        if module is None:
            names.append(name)
            continue
        try:
            importlib.import_module(module)
        except (ImportError, OSError) as exc:
            missing[name] = str(exc) or type(exc).__name__
        else:
            names.append(name)
    return names, missing


def _frame_powers(x: np.ndarray, frame: int) -> np.ndarray:
    n = x.size // frame * frame
    if n == 0:
        return np.array([float(np.mean(np.square(x, dtype=np.float64)))]) if x.size else \
            np.zeros(1)
    powers: np.ndarray = np.mean(np.square(x[:n].astype(np.float64).reshape(-1, frame)), axis=1)
    return powers


def _db(num: float, den: float) -> float:
    return 10 * math.log10((num + _EPS) / (den + _EPS))


def _si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    e, r = estimate.astype(np.float64), reference.astype(np.float64)
    alpha = float(e @ r) / (float(r @ r) + _EPS)
    target = alpha * r
    return _db(float(target @ target), float(np.sum(np.square(e - target))))


def _blind_snr(powers: np.ndarray) -> float:
    """As `metrics.snr_estimate`: the quietest 10 % of frames are the noise."""
    k = max(1, int(round(0.1 * powers.size)))
    noise = float(np.mean(np.sort(powers)[:k]))
    signal = max(float(np.mean(powers)) - noise, 0.0)
    return float(np.clip(_db(signal, noise), -60.0, 60.0))


def features(x: np.ndarray, outputs: Mapping[str, np.ndarray], sr: int) -> dict[str, Features]:
    """Measure each candidate's output against the input and the other outputs.

    Parameters
    ----------
    x : np.ndarray, shape (frames,)
        The input (excerpts of one channel).
    outputs : mapping of str to np.ndarray
        Each candidate's output for ``x``, as long and lined up with it.
    sr : int
        Sample rate.

    Returns
    -------
    dict of str to Features
    """
    frame = max(1, round(_FRAME_S * sr))
    px = _frame_powers(x, frame)
    loud = px >= np.percentile(px, _LOUD_PERCENTILE)
    quiet = px <= np.percentile(px, _QUIET_PERCENTILE)
    total = float(px.sum())
    out: dict[str, Features] = {}
    for name, y in outputs.items():
        py = _frame_powers(y, frame)
        pr = _frame_powers(x - y, frame)
        others = [_si_sdr(y, z) for other, z in outputs.items() if other != name]
        agree = float(np.mean(np.clip(others, -20.0, 40.0))) if others else 0.0
        out[name] = Features(
            loud_kept_db=_db(float(py[loud].sum()), float(px[loud].sum())),
            quiet_kept_db=_db(float(py[quiet].sum()), float(px[quiet].sum())),
            snr_out_db=_blind_snr(py), residual_db=_db(float(pr.sum()), total),
            agree_db=agree)
    return out


def _band_envelopes(x: np.ndarray, sr: int) -> np.ndarray:
    """Log power in `_FOLLOW_BANDS_HZ` per 8 ms hop: shape (bands, hops)."""
    from scipy.signal import stft  # scipy only when a choice is made: panels import this
    nperseg = max(16, round(_FOLLOW_WINDOW_S * sr))
    freqs, _, z = stft(x.astype(np.float64), sr, nperseg=nperseg, noverlap=nperseg * 3 // 4)
    power = np.abs(z) ** 2
    low, high, count = _FOLLOW_BANDS_HZ
    edges = np.geomspace(low, min(high, 0.45 * sr), count + 1)
    bands = [power[(freqs >= lo) & (freqs < hi)].sum(axis=0)
             for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return np.log(np.asarray(bands) + _EPS)


def follow(x: np.ndarray, gate: np.ndarray, network: np.ndarray, sr: int) -> float:
    """How closely what a network removed follows what the gate kept, band by band.

    The mean, over eight log-spaced bands from 150 Hz to 6 kHz, of the correlation of
    two log envelopes (32 ms windows, 8 ms hops): the gate's output and the network's
    residual ``x - network``. A steady noise leaves a residual that does not move with
    the speech the gate keeps (under 0.2 on white and pink noise in the tuning part,
    0.1 to 0.5 on fans and hum); a speech-like noise does, because the gate keeps it as
    it keeps a voice, and so does a voice the network removed (babble: 0.37 to 0.9,
    highest at -5 dB SNR; typing too, 0.75 to 0.9, but it reads clean and is not judged
    by this).

    Parameters
    ----------
    x, gate, network : np.ndarray, shape (frames,)
        The input and the two outputs, lined up.
    sr : int
        Sample rate.

    Returns
    -------
    float
        From -1 to 1.
    """
    kept = _band_envelopes(gate, sr)
    removed = _band_envelopes(np.asarray(x, np.float64) - network, sr)
    kept = kept - kept.mean(axis=1, keepdims=True)
    removed = removed - removed.mean(axis=1, keepdims=True)
    num = np.sum(kept * removed, axis=1)
    den = np.sqrt(np.sum(kept * kept, axis=1) * np.sum(removed * removed, axis=1)) + _EPS
    return float(np.mean(num / den))


def _model(tried: Sequence[str]) -> tuple[dict[Combo, tuple[float, float]], np.ndarray]:
    """The candidates (those whose backends all ran) and the feature weights to use."""
    combos, weights = _MODELS[0] if "deepfilternet" in tried else _MODELS[1]
    return ({c: w for c, w in combos.items() if all(b in tried for b in c)},
            np.asarray(weights))


def gate_only(snr_in_db: float) -> bool:
    """Whether a channel of this blind SNR gets the gate without a comparison."""
    return CHOOSE_GATE_SNR_DB <= snr_in_db < AUTO_CLEAN_SNR_DB


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b) / (math.sqrt(float(a @ a) * float(b @ b)) + _EPS)


def choose(x: np.ndarray, outputs: Mapping[str, np.ndarray], sr: int,
           snr_in_db: float) -> Choice:
    """Pick the candidate with the highest estimated gain, or none if none gains enough.

    Parameters
    ----------
    x : np.ndarray, shape (frames,)
        The input excerpt(s) of one channel, joined.
    outputs : mapping of str to np.ndarray
        Each backend's output (keys from `CANDIDATES`: those that ran), lined up with
        ``x``; the averages are made here. Unused (may be empty) when `gate_only`.
    sr : int
        Sample rate.
    snr_in_db : float
        Blind SNR of the whole channel.

    Returns
    -------
    Choice
    """
    if gate_only(snr_in_db):
        return Choice(("noisereduce",), {}, {},
                      f"gate: estimated SNR {snr_in_db:.1f} dB (from {CHOOSE_GATE_SNR_DB:g} to "
                      f"{AUTO_CLEAN_SNR_DB:g} dB the networks cost nearly clean speech more "
                      "than they remove)")
    combos, weights = _model(list(outputs))
    mixed = {combo_name(c): np.mean([outputs[b] for b in c], axis=0) if len(c) > 1
             else np.asarray(outputs[c[0]]) for c in combos}
    measured = features(x, mixed, sr)
    snr = float(np.clip(snr_in_db, 0.0, 40.0))
    scores = {combo_name(c): round(a + b * snr + float(weights @ measured[combo_name(c)].vector()),
                                   2) for c, (a, b) in combos.items()}
    by_name = {combo_name(c): c for c in combos}
    listed = ", ".join(f"{_label(by_name[n])} {s:+.1f} dB" for n, s in scores.items())
    if snr_in_db >= AUTO_CLEAN_SNR_DB:
        shared = (_correlation(x - outputs["rnnoise"], x - outputs["deepfilternet"])
                  if "rnnoise" in outputs and "deepfilternet" in outputs else None)
        if shared is None or shared < CHOOSE_SHARED_RESIDUAL:
            why = ("" if shared is None else
                   f", and RNNoise's and DeepFilterNet3's residuals correlate {shared:.2f} "
                   f"(under {CHOOSE_SHARED_RESIDUAL:g}: no common noise)")
            return Choice((), scores, measured,
                          f"left as is: estimated SNR {snr_in_db:.1f} dB is clean (at least "
                          f"{AUTO_CLEAN_SNR_DB:g} dB){why}")
    # A sanity check the linear model lacks: a candidate that did not raise the blind SNR
    # has not removed noise, whatever else it did (never the case on the tuning part).
    eligible = [n for n in scores if snr_in_db >= AUTO_CLEAN_SNR_DB
                or measured[n].snr_out_db >= snr_in_db + CHOOSE_MIN_SNR_GAIN_DB]
    voice = _voice_removed(measured)
    if voice:
        eligible = [n for n in eligible if n == "noisereduce"]
    best = max(eligible, key=lambda n: scores[n]) if eligible else None
    if best is None or scores[best] < CHOOSE_MIN_GAIN_DB:
        unraised = "" if len(eligible) == len(scores) or voice else (
            f"; {len(scores) - len(eligible)} did not raise the blind SNR by "
            f"{CHOOSE_MIN_SNR_GAIN_DB:g} dB")
        return Choice((), scores, measured,
                      f"left as is: no noise reducer is estimated to gain "
                      f"{CHOOSE_MIN_GAIN_DB:g} dB of SI-SDR ({listed}{unraised}{voice})")
    rest = ", ".join(f"{_label(by_name[n])} {s:+.1f} dB" for n, s in scores.items()
                     if n != best)
    dry, kept = 0.0, ""
    if scores[best] < CHOOSE_DRY_BELOW_DB or measured[best].residual_db < CHOOSE_DRY_RESIDUAL_DB:
        dry = CHOOSE_DRY
        kept = (f"; {dry:.0%} of the input added back (estimated gain under "
                f"{CHOOSE_DRY_BELOW_DB:g} dB or residual {measured[best].residual_db:.1f} dB "
                f"under {CHOOSE_DRY_RESIDUAL_DB:g} dB: what it takes from the voice weighs "
                "more than the noise it leaves)")
    babble = _babble(x, outputs, sr, snr_in_db, scores[best], bool(voice))
    if babble is not None:
        return Choice(babble[0], scores, measured, f"{babble[2]} ({listed}{voice})",
                      dry=1.0 - sum(babble[1]), shares=babble[1])
    return Choice(by_name[best], scores, measured,
                  f"{_label(by_name[best])} chosen: estimated SI-SDR gain {scores[best]:+.1f} dB"
                  + (f" vs {rest}" if rest else " (the only candidate)") + voice + kept,
                  dry=dry)


def _babble(x: np.ndarray, outputs: Mapping[str, np.ndarray], sr: int, snr_in_db: float,
            estimate_db: float, voice: bool
            ) -> tuple[tuple[str, ...], tuple[float, ...], str] | None:
    """The fixed blend for a speech-like noise (`CHOOSE_BABBLE_BLEND`), or None if not one.

    Returns the backends, their shares and the reason. When the voice guard fired,
    DeepFilterNet3's share goes to the gate.
    """
    network = next((n for n in CHOOSE_BABBLE_BLEND if n in outputs), None)
    if (network is None or "noisereduce" not in outputs or snr_in_db >= AUTO_CLEAN_SNR_DB
            or estimate_db >= CHOOSE_FOLLOW_BELOW_DB):
        return None
    followed = follow(x, outputs["noisereduce"], outputs[network], sr)
    if followed < CHOOSE_FOLLOW:
        return None
    low, high = CHOOSE_FOLLOW_RAMP
    u = float(np.clip((followed - low) / (high - low), 0.0, 1.0))
    gate, dnn, _ = ((1 - u) * a + u * b for a, b in zip(*CHOOSE_BABBLE_BLEND[network],
                                                         strict=True))
    if voice:
        gate, dnn = gate + dnn, 0.0
    backends = ("noisereduce", "deepfilternet") if dnn > 0 else ("noisereduce",)
    shares = (gate, dnn) if dnn > 0 else (gate,)
    dry = 1.0 - gate - dnn
    made = f"{gate:.0%} gate" + (f", {dnn:.0%} DeepFilterNet3" if dnn > 0 else "")
    return backends, shares, (
        f"a speech-like noise (babble): what {NAMES[network]} removed follows what the gate "
        f"kept ({followed:.2f}, at least {CHOOSE_FOLLOW:g}) and the best estimate is under "
        f"{CHOOSE_FOLLOW_BELOW_DB:g} dB, so the estimates are not trusted; a fixed blend: "
        f"{made}, {dry:.0%} of the input")


def _voice_removed(measured: Mapping[str, Features]) -> str:
    """Why the networks are not candidates, or "": DeepFilterNet3 took the voice for noise.

    The gate keeps the input's loud frames (the voice) better than its pauses by at least
    `CHOOSE_GATE_CONTRAST_DB`, DeepFilterNet3 no better than `CHOOSE_VOICE_CONTRAST_DB`:
    it removed the loud frames as much as the pauses (on the tuning part, babble at -5
    and 0 dB SNR: a talker of the babble kept, the voice removed, -6 to -12 dB). On
    typing the loud frames are the clicks and the gate removes nothing: no contrast.
    """
    gate, network = measured.get("noisereduce"), measured.get("deepfilternet")
    if gate is None or network is None or not (
            gate.contrast_db >= CHOOSE_GATE_CONTRAST_DB
            and network.contrast_db < CHOOSE_VOICE_CONTRAST_DB):
        return ""
    return (f"; the networks are not candidates: DeepFilterNet3 kept the loud frames "
            f"{network.contrast_db:+.1f} dB better than the pauses, the gate "
            f"{gate.contrast_db:+.1f} dB (it took the voice for the noise)")
