"""What `enhance` measured, decided and did: `EnhanceReport`, one `ChannelReport` a channel."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .params import EnhanceParams

__all__ = ["ChannelReport", "EnhanceReport"]


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
        applied; ``auto`` is then False and ``hum`` the notched frequency or None;
        ``backend`` is "auto" when several backends' outputs were averaged).
    noise_clips_s : tuple of (float, float)
        The noise-only segments (seconds) that made the noise profile, if any.
    hum_notched : bool
        Whether the hum notches ran on this channel.
    decision : str
        What the auto mode decided and why (or "as requested").
    backend : str or None
        The noise reducer that ran on this channel ("noisereduce", "rnnoise" or
        "deepfilternet"), None if none did.
    scores : dict of str to float
        With ``backend="auto"``: every candidate's estimated SI-SDR gain in dB (a
        no-reference estimate, see `vocalink_lab.audio.enhance.choose`); empty
        otherwise.
    """

    channel: int
    snr_in_db: float
    snr_out_db: float
    params: EnhanceParams
    noise_clips_s: tuple[tuple[float, float], ...]
    hum_notched: bool
    decision: str
    backend: str | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"channel": self.channel, "snr_in_db": self.snr_in_db,
                "snr_out_db": self.snr_out_db, "params": self.params.to_dict(),
                "noise_clips_s": [list(c) for c in self.noise_clips_s],
                "hum_notched": bool(self.hum_notched), "decision": self.decision,
                "backend": self.backend, "scores": dict(self.scores)}


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
    def backends(self) -> tuple[str | None, ...]:
        """The noise reducer that ran on each channel (None: none)."""
        return tuple(c.backend for c in self.channel_reports)

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
            "backends": list(self.backends),
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
