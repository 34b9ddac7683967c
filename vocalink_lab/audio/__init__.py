"""Audio: pure DSP on arrays, plus file I/O (decode any accepted format).

Arrays are float32 ``(channels, frames)`` (a 1-D array is one channel; the type
is `Audio`). The modules: `io` (load, save, resample, streaming reader and writer —
the only one that touches files, with the ``*_file`` helpers built on it), `metrics`
(levels, loudness, SNR, SI-SDR, STOI, and the streaming meters behind them),
`analysis` (envelope, spectrogram, levels, plots), `enhance` (a package: noise
reduction, high-pass, hum, loudness; presets and auto mode), `align` and `merge`
(time-align a take, then concat / multichannel / mix), `batch` (parameter grids
over many recordings) and `synth` (test signals).

The DSP modules load on first use: a server that only stores files never
imports noisereduce. ``audio.enhance``, ``audio.align`` and ``audio.merge`` are
the modules (``audio.enhance.enhance(x, sr)``); their other names are here too.
"""

from __future__ import annotations

import importlib
from typing import Any

from .io import (
    AAC_PRIMING_SPREAD,
    AAC_UNDECLARED_PRIMING,
    FORMATS,
    MEDIA_TYPES,
    WRITE_FORMATS,
    Audio,
    AudioInfo,
    AudioReader,
    AudioWriter,
    aac_priming,
    as_channels,
    load,
    probe,
    resample,
    save,
)

#: Public names of the lazily loaded modules, and where each lives.
_MODULES = ("analysis", "metrics", "synth", "batch", "enhance", "align", "merge")
_LAZY = {
    "envelope": "analysis", "envelope_file": "analysis", "spectrogram": "analysis",
    "levels": "analysis", "plot_waveform": "analysis", "plot_spectrogram": "analysis",
    "si_sdr": "metrics", "stoi": "metrics", "snr_estimate": "metrics",
    "loudness_lufs": "metrics", "rms_dbfs": "metrics", "peak_dbfs": "metrics",
    "EnhanceParams": "enhance", "PRESETS": "enhance", "enhance_file": "enhance",
    "resolve_params": "enhance", "Alignment": "align", "MERGE_MODES": "merge",
    "merge_files": "merge",
    "enhance_batch": "batch",
}

__all__ = [
    "AAC_PRIMING_SPREAD",
    "AAC_UNDECLARED_PRIMING",
    "aac_priming",
    "FORMATS",
    "MEDIA_TYPES",
    "WRITE_FORMATS",
    "Audio",
    "AudioInfo",
    "AudioReader",
    "AudioWriter",
    "as_channels",
    "load",
    "probe",
    "resample",
    "save",
    *_MODULES,
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _LAZY:
        raise AttributeError(f"module 'vocalink_lab.audio' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value
