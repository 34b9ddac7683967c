"""Transcription: timed speech-to-text of a recording, and of a whole take by device.

The engine is faster-whisper (CTranslate2, int8 on the CPU) with the whisper "base"
model, both from the ``[asr]`` extra; a folder of another faster-whisper model can be
named instead (``VOCALINK_ASR_MODEL``). Nothing is ever downloaded: without the extra
or a model, asking for a transcript raises `TranscriptionUnavailable`, saying how to
install one.

The modules: `transcript` (`Transcript`, `Segment`, `Word`, and the WebVTT, SRT and CSV
exports), `model` (finding, joining and checking the model; `require_engine`), `engine`
(`transcribe_file`: a file in windows of bounded memory, optionally enhanced first) and
`take` (`transcribe_take_file`: every channel of an aligned take, each line given to the
device that heard it loudest). Only `transcript` loads at import: the engine and its
model load on first use, in the process that transcribes.
"""

from __future__ import annotations

import importlib
from typing import Any

from .transcript import EXPORT_FORMATS, Segment, Transcript, Word, export

__all__ = [
    "EXPORT_FORMATS",
    "Segment",
    "Transcript",
    "Word",
    "export",
    "require_engine",
    "transcribe_file",
    "transcribe_take_file",
]

_LAZY = {"require_engine": "model", "locate_model": "model", "load_model": "model",
         "ASR_INSTALL": "model", "transcribe_file": "engine",
         "transcribe_take_file": "take", "attribute": "take"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
