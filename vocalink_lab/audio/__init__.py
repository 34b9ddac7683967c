"""Audio: pure DSP on arrays, plus file I/O (decode any accepted format)."""

from __future__ import annotations

from .io import (
    FORMATS,
    MEDIA_TYPES,
    WRITE_FORMATS,
    AudioInfo,
    AudioReader,
    AudioWriter,
    as_channels,
    load,
    probe,
    resample,
    save,
)

__all__ = [
    "FORMATS",
    "MEDIA_TYPES",
    "WRITE_FORMATS",
    "AudioInfo",
    "AudioReader",
    "AudioWriter",
    "as_channels",
    "load",
    "probe",
    "resample",
    "save",
]
