"""Audio: pure DSP on arrays, plus file I/O (decode any accepted format)."""

from __future__ import annotations

from .io import FORMATS, MEDIA_TYPES, AudioInfo, probe

__all__ = ["FORMATS", "MEDIA_TYPES", "AudioInfo", "probe"]
