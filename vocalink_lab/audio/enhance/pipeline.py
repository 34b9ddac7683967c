"""The pipeline: `enhance` (arrays) and `enhance_file` (files, streamed), one code path.

Analyse (when the settings need it), plan per channel, then stream every block
through the stages into the output, measuring both sides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt

from ...errors import ParameterError
from ...levels import FLOOR_DBFS
from ...progress import Progress, span
from ..io import Audio, AudioReader, AudioWriter, as_channels
from .auto import AUTO_CLEAN_SNR_DB, AUTO_RUMBLE_SHARE, _auto_blend, _auto_gate
from .choose import CANDIDATES as _CANDIDATES
from .choose import NAMES as _CANDIDATE_NAMES
from .choose import available as _available_candidates
from .choose import choose as _choose
from .choose import combo_name as _combo_name
from .choose import gate_only as _gate_only
from .meters import (
    _FRAME_S,
    _NOISE_PERCENTILE,
    _RUMBLE_BELOW_HZ,
    _SEG_FRAMES,
    _HumSpectrum,
    _Meters,
    _NoiseSegments,
)
from .params import EnhanceParams, _check_rate, _params_from, _summary
from .report import ChannelReport, EnhanceReport
from .stages import (
    _DeepFilterNetStage,
    _filters,
    _Gate,
    _GateStage,
    _RNNoiseStage,
    _Stage,
    _ZeroPhaseStage,
    require_backend,
)

__all__ = ["enhance", "enhance_file"]

_NOISE_SHARE = 0.10  # the noise profile covers about this share of the recording ...
_NOISE_MIN_SEGMENTS, _NOISE_MAX_SEGMENTS = 3, 25  # ... in 0.5 to 4 s of segments
_PEAK_CEILING_DBFS = -1.0
_MAX_CHANNELS = 64
_BLOCK_FRAMES = 1 << 16
_GAIN_PASS_START = 0.9  # share of the progress before enhance_file's last pass (the gain)
#: The neural backends: their stages, and their names in the report.
_NETWORKS = {"rnnoise": _RNNoiseStage, "deepfilternet": _DeepFilterNetStage}
_NAMES = {"rnnoise": "RNNoise", "deepfilternet": "DeepFilterNet3"}
#: backend="auto" compares the candidates on up to this many excerpts of this length,
#: evenly spread over the recording (all of it when it is no longer than their sum):
#: the comparison costs the same on an hour as on a minute.
_EXCERPTS, _EXCERPT_S = 3, 8.0


def enhance(audio: npt.ArrayLike, sr: int,
            params: EnhanceParams | Mapping[str, Any] | str | None = None, *,
            progress: Progress | None = None) -> tuple[Audio, EnhanceReport]:
    """Reduce noise, hum and rumble, and normalise loudness.

    Parameters
    ----------
    audio : array_like, shape (frames,) or (channels, frames)
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
                gain_pass = span(progress, _GAIN_PASS_START, 1.0)
                with AudioReader(target) as pre, AudioWriter(dst, rate, pre.channels,
                                                             subtype=subtype) as writer:
                    done = 0
                    for block in pre.blocks(_BLOCK_FRAMES):
                        writer.write(block * gain)
                        done += block.shape[1]
                        _report(gain_pass, done, pre.frames)
        finally:
            if needs_gain_pass:
                target.unlink(missing_ok=True)
    report = result.report(time.perf_counter() - began)
    if progress is not None:
        progress(1.0)
    return report


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done / max(1, total))


# -- sources: an array, or an AudioReader --------------------------------------------------------


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


# -- the pipeline ------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Per-channel decisions, and the report's words for them."""

    params: list[EnhanceParams]
    gates: list[_Gate | None]
    backends: list[tuple[str, ...]]  # per channel, the backends averaged (none: as is)
    clips: list[tuple[tuple[float, float], ...]]
    notched: list[bool]
    reasons: list[str]
    highpass_hz: float | None = None
    hum_hz: float | None = None
    hum_prominence_db: float | None = None
    rumble_share: float | None = None
    decisions: list[str] = field(default_factory=list)
    scores: list[dict[str, float]] = field(default_factory=list)
    dry: list[float] = field(default_factory=list)  # per channel, the input's share (auto)
    shares: list[tuple[float, ...]] = field(default_factory=list)  # per channel: backends'


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
        loud_out = loud_pre + self.gain_db if math.isfinite(loud_pre) and loud_pre > FLOOR_DBFS \
            else loud_pre
        channel_reports = tuple(
            ChannelReport(channel=ch, snr_in_db=self.meters_in.snr_db(ch),
                          snr_out_db=self.meters_out.snr_db(ch), params=self.plan.params[ch],
                          noise_clips_s=self.plan.clips[ch], hum_notched=self.plan.notched[ch],
                          decision=self.plan.reasons[ch],
                          backend=_combo_name(self.plan.backends[ch]) or None,
                          scores=self.plan.scores[ch] if self.plan.scores else {})
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
            peak_out_dbfs=peak_out + self.gain_db if peak_out > FLOOR_DBFS else peak_out,
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
        if p.reduce and p.backend in ("noisereduce", "auto"):
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
        require_backend(p)

    # -- analysis and plan ------------------------------------------------------------------

    def _needs_analysis(self) -> bool:
        p = self.p
        needs_profile = p.reduce and p.backend in ("noisereduce", "auto") and (
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
        plan = _Plan(params=[], gates=[], backends=[], clips=[], notched=[False] * channels,
                     reasons=[])
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
        choosing = self.p.auto and self.p.reduce and self.p.backend == "auto"
        for ch in range(self.channels):
            gate, clips, reason, eff = self._plan_channel(ch, meters, choosing=choosing)
            hum = None if not plan.notched[ch] or plan.hum_hz is None else (
                50 if plan.hum_hz < 55 else 60)
            eff = eff.replace(auto=False, highpass_hz=plan.highpass_hz, hum=hum)
            plan.gates.append(gate)
            plan.backends.append(() if gate is None else (self._backend,))
            plan.clips.append(clips)
            plan.reasons.append(reason)
            plan.params.append(eff)
        if choosing:
            assert meters is not None
            self._choose(plan, meters)
        for ch, reason in enumerate(plan.reasons):
            plan.decisions.append(f"channel {ch}: {reason}" if self.channels > 1 else reason)
        return plan

    @property
    def _backend(self) -> str:
        """The backend asked for; "auto" is the gate until a choice is made."""
        return "noisereduce" if self.p.backend == "auto" else self.p.backend

    def _reducers(self, backends: Sequence[tuple[str, ...]], gates: Sequence[_Gate | None],
                  dry: Sequence[float] | None = None,
                  shares: Sequence[Sequence[float]] | None = None) -> list[_Stage]:
        """The noise reduction: each backend on the channels that use it, averaged per channel.

        ``dry``: per channel, the share of the (filtered) input added back, the backends'
        average weighing the rest (none: 0); ``shares``: per channel, each backend's share
        in the order of its ``backends`` instead of that average (empty: the average).
        """
        dry = [0.0] * len(backends) if dry is None else list(dry)
        shares = [()] * len(backends) if shares is None else list(shares)
        branches: list[_Stage | None] = []
        weights: list[list[float]] = []
        for name in _CANDIDATES:
            users = [name in b for b in backends]
            if not any(users):
                continue
            if name == "noisereduce":
                branches.append(_GateStage(self.sr, [g if u else None
                                                     for u, g in zip(users, gates, strict=True)],
                                           round(self.p.chunk_s * self.sr)))
            else:
                branches.append(_NETWORKS[name](self.sr, users))
            weights.append([(w[b.index(name)] if w else (1.0 - d) / len(b)) if u else 0.0
                            for u, b, d, w in zip(users, backends, dry, shares, strict=True)])
        if not branches:
            return []
        if len(branches) == 1 and all(backends) and not any(dry):
            return [cast(_Stage, branches[0])]  # one backend on every channel: as it is
        branches.append(None)  # the input itself: channels left as they are, or added back
        weights.append([d if b else 1.0 for b, d in zip(backends, dry, strict=True)])
        return [_Parallel(branches, np.array(weights))]

    def _filter_stage(self, plan: _Plan) -> list[_Stage]:
        sos = [(_filters(self.sr, plan.highpass_hz, self.p.highpass_order,
                         plan.hum_hz if plan.notched[ch] else None, self.p.hum_harmonics))
               for ch in range(self.channels)]
        return [_ZeroPhaseStage(sos, self.sr)] if any(s is not None for s in sos) else []

    def _excerpts(self) -> list[tuple[int, int]]:
        """Where backend="auto" compares the candidates: ``(start, frames)``, evenly spread."""
        length = round(_EXCERPT_S * self.sr)
        if self.frames <= _EXCERPTS * length:
            return [(0, self.frames)]
        starts = np.linspace(0, self.frames - length, _EXCERPTS).round().astype(int)
        return [(int(s), length) for s in starts]

    def _choose(self, plan: _Plan, meters: _Meters) -> None:
        """backend="auto": run every installed candidate on the excerpts, keep the best."""
        names, missing = _available_candidates()
        excerpts = self._excerpts()
        todo = [ch for ch in range(self.channels) if plan.gates[ch] is not None]
        plan.scores = [{} for _ in range(self.channels)]
        plan.dry = [0.0] * self.channels
        plan.shares = [()] * self.channels
        compared = [ch for ch in todo if not _gate_only(meters.snr_db(ch))]
        for ch in set(todo) - set(compared):
            reason = _choose(np.zeros(0, np.float32), {}, self.sr, meters.snr_db(ch)).reason
            plan.reasons[ch] = f"{reason}; the gate: {plan.reasons[ch]}"
        todo = compared
        if not todo:
            return
        x = np.concatenate([np.asarray(self.source.read(s, n), dtype=np.float32)
                            for s, n in excerpts], axis=1)
        outputs: dict[str, np.ndarray] = {}
        for name in names:
            backends = [(name,) if ch in todo else () for ch in range(self.channels)]
            outputs[name] = np.concatenate(
                [_run_through(self._filter_stage(plan) + self._reducers(backends, plan.gates),
                              np.asarray(self.source.read(s, n), dtype=np.float32))
                 for s, n in excerpts], axis=1)
        seconds = x.shape[1] / self.sr
        tried = ", ".join(_CANDIDATE_NAMES[n] for n in names)
        note = f"compared {tried} on {seconds:.1f} s" + (
            "" if len(excerpts) == 1 else f" ({len(excerpts)} excerpts)")
        if missing:
            note += "; not installed: " + ", ".join(
                f"{_CANDIDATE_NAMES[n]} ({why})" for n, why in missing.items())
        plan.decisions.append(f"auto: {note}")
        for ch in todo:
            choice = _choose(x[ch], {n: y[ch] for n, y in outputs.items()}, self.sr,
                             meters.snr_db(ch))
            plan.scores[ch] = choice.scores
            plan.backends[ch] = choice.backends
            plan.dry[ch] = choice.dry
            plan.shares[ch] = choice.shares
            if not choice.backends:
                plan.gates[ch] = None
                plan.clips[ch] = ()
                plan.params[ch] = plan.params[ch].replace(reduce=False)
                plan.reasons[ch] = choice.reason
            elif "noisereduce" in choice.backends:
                plan.reasons[ch] = f"{choice.reason}; the gate: {plan.reasons[ch]}"
            else:
                plan.clips[ch] = ()
                plan.reasons[ch] = choice.reason
            if choice.backends:  # several averaged: "auto" (ChannelReport.backend says which)
                plan.params[ch] = plan.params[ch].replace(
                    backend=choice.backends[0] if len(choice.backends) == 1 else "auto")

    def _plan_channel(self, ch: int, meters: _Meters | None, *, choosing: bool = False
                      ) -> tuple[_Gate | None, tuple[tuple[float, float], ...], str,
                                 EnhanceParams]:
        """The gate (or network) of channel ``ch``; when ``choosing``, the gate candidate."""
        p = self.p
        if not p.reduce:
            return None, (), "noise reduction off, as requested", p
        if p.backend == "auto":
            p = p.replace(backend="noisereduce")
        win = p.win_length or p.n_fft
        if p.backend == "noisereduce" and self.frames < win:
            return None, (), (f"no noise reduction: {self.frames} samples are fewer than one "
                              f"STFT window ({win})"), p.replace(reduce=False)
        eff, reason = p, "as requested"
        if p.auto:
            assert meters is not None
            snr = meters.snr_db(ch)
            # When choosing, the candidates judge a "clean" channel too: transient noise
            # (typing) between silent pauses reads as clean to the blind SNR.
            if snr >= AUTO_CLEAN_SNR_DB and not choosing:
                return None, (), (f"left as is: estimated SNR {snr:.1f} dB is clean (at least "
                                  f"{AUTO_CLEAN_SNR_DB:g} dB)"), p.replace(reduce=False)
            if p.backend in _NETWORKS:
                return _Gate(p, None), (), (f"{_NAMES[p.backend]}: estimated SNR {snr:.1f} dB "
                                            f"(under {AUTO_CLEAN_SNR_DB:g} dB)"), p
            prop, n_std, smooth = _auto_gate(snr)
            reason = (f"estimated SNR {snr:.1f} dB (under {AUTO_CLEAN_SNR_DB:g} dB): "
                      f"stationary gate against a noise profile, prop_decrease {prop:.2f}, "
                      f"threshold {n_std:.2f} standard deviations, mask smoothed over "
                      f"{smooth:g} ms and not across frequency")
            hop_ms = (p.hop_length or (p.win_length or p.n_fft) // 4) / self.sr * 1000
            eff = p.replace(stationary=True, prop_decrease=prop, n_std_thresh_stationary=n_std,
                            freq_mask_smooth_hz=None,
                            time_mask_smooth_ms=smooth if smooth >= hop_ms else None)
        elif p.backend in _NETWORKS:
            return _Gate(p, None), (), f"{_NAMES[p.backend]}, as requested", p
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
        if self.progress is not None:
            self.progress(0.0)
        analysis = self._needs_analysis()
        end = _GAIN_PASS_START if final_pass else 1.0
        start = 0.2 * end if analysis else 0.0
        meters_in = self._new_meters(analysis=analysis)
        if analysis:
            analysing = span(self.progress, 0.0, start)
            done = 0
            for block in self.source.blocks(_BLOCK_FRAMES):
                meters_in.push(block)
                done += block.shape[1]
                _report(analysing, done, self.frames)
            meters_in.finish()
        # The plan needs the filters to build noise profiles; set them first.
        self._highpass: float | None = None
        self._hum_hz: float | None = None
        self._notched = [False] * self.channels
        plan = self._plan_filters(meters_in if analysis else None)
        self._highpass, self._hum_hz, self._notched = plan.highpass_hz, plan.hum_hz, plan.notched
        plan = self._plan_channels(plan, meters_in if analysis else None)
        stages = self._filter_stage(plan) + self._reducers(
            [b if g is not None else () for b, g in zip(plan.backends, plan.gates, strict=True)],
            plan.gates, plan.dry or None, plan.shares or None)
        meters_out = _Meters(self.channels, self.sr)
        processing = span(self.progress, start, end)
        done = 0
        for block in self.source.blocks(_BLOCK_FRAMES):
            if not analysis:
                meters_in.push(block)
            self._emit(_push_through(stages, block), meters_out, sink)
            done += block.shape[1]
            _report(processing, done, self.frames)
        for y in _flush_through(stages):
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
        if measured <= FLOOR_DBFS or peak <= FLOOR_DBFS:
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


class _Parallel:
    """Several noise reducers on the same input; per channel, a weighted sum of their outputs.

    Each branch returns, over the whole stream, as many frames as it was given, lined
    up with the input, but each in its own time (the gate a chunk at a time, the
    networks a frame behind): what they return waits here until every branch has
    it. A branch of None is the input itself, for the channels left as they are
    (their samples pass exactly) and for the share of the input the auto mode adds
    back to a channel (`choose.Choice.dry`). Memory: the lag of the slowest branch (a chunk).
    """

    def __init__(self, branches: Sequence[_Stage | None], weights: np.ndarray) -> None:
        self._branches = list(branches)
        self._weights = weights  # (branches, channels)
        channels = weights.shape[1]
        self._ready = [np.zeros((channels, 0), np.float32) for _ in self._branches]

    def push(self, x: np.ndarray) -> np.ndarray:
        for i, branch in enumerate(self._branches):
            y = x if branch is None else branch.push(x)
            self._ready[i] = np.concatenate([self._ready[i], np.asarray(y, np.float32)], axis=1)
        return self._take()

    def flush(self) -> np.ndarray:
        for i, branch in enumerate(self._branches):
            if branch is not None:
                self._ready[i] = np.concatenate([self._ready[i], branch.flush()], axis=1)
        return self._take()

    def _take(self) -> np.ndarray:
        n = min(r.shape[1] for r in self._ready)
        out = np.zeros((self._weights.shape[1], n), np.float32)
        for ch in range(out.shape[0]):
            used = np.flatnonzero(self._weights[:, ch])
            if used.size == 1 and self._weights[used[0], ch] == 1.0:
                out[ch] = self._ready[used[0]][ch, :n]
            else:
                for i in used:
                    out[ch] += np.float32(self._weights[i, ch]) * self._ready[i][ch, :n]
        self._ready = [r[:, n:] for r in self._ready]
        return out


def _push_through(stages: Sequence[_Stage], block: np.ndarray) -> np.ndarray:
    """``block`` through every stage in turn: what comes out of the last."""
    y = block
    for stage in stages:
        y = stage.push(y)
    return y


def _flush_through(stages: Sequence[_Stage]) -> Iterator[np.ndarray]:
    """Flush the stages in order, each one's rest through the later ones."""
    for i, stage in enumerate(stages):
        yield _push_through(stages[i + 1:], stage.flush())


def _run_through(stages: Sequence[_Stage], x: np.ndarray) -> np.ndarray:
    """A whole (short) array through the stages: the output, as long as ``x``."""
    parts = [_push_through(stages, x[:, i:i + _BLOCK_FRAMES])
             for i in range(0, x.shape[1], _BLOCK_FRAMES)]
    parts.extend(_flush_through(stages))
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)
