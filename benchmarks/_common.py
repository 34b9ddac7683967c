"""Shared plumbing of the benchmarks: child processes, statistics, tables.

Every child process is started in its own process group, watched with a
timeout, and ended by its pid (SIGTERM, then SIGKILL) when the benchmark ends,
normally or not. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import secrets
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PYTHON = sys.executable

#: The controller token of every side (the server child and every client here):
#: ``VOCALINK_TOKEN``, or one made for this run and put in the environment children inherit.
os.environ.setdefault("VOCALINK_TOKEN", secrets.token_urlsafe(32))
TOKEN = os.environ["VOCALINK_TOKEN"]
#: What every request to a vocalink server sends (``/ping`` needs none).
AUTH = {"Authorization": f"Bearer {TOKEN}"}

#: The vocalink server never advertises (mDNS) from a benchmark, and listens on loopback only.
LOOPBACK_ENV = {"VOCALINK_ADVERTISE": "0", "VOCALINK_INTERFACES": "127.0.0.1"}


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Child:
    """A child process whose stdout lines can be awaited, and which is always ended.

    Parameters
    ----------
    name : str
        For messages.
    argv : sequence of str
        The command.
    log_path : Path
        Where its stderr goes (shown when something fails).
    env : dict, optional
        Extra environment variables.
    stdin_pipe : bool
        Give it a stdin pipe; closing it tells cooperative children to stop.
    """

    def __init__(self, name: str, argv: Sequence[str], *, log_path: Path,
                 env: dict[str, str] | None = None, stdin_pipe: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self._stdout: IO[bytes] = self.proc.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)
        self._buffer = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout: float) -> str:
        """The next stdout line; raise RuntimeError on timeout or exit."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no output within {timeout:g} s{self._tail()}")
            if not self._selector.select(left):
                continue
            data = os.read(self._stdout.fileno(), 65536)
            if not data:
                raise RuntimeError(f"{self.name} exited (rc={self.proc.wait(5)}){self._tail()}")
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    def drain_stdout(self) -> None:
        """Read the rest of stdout in a daemon thread, so the child never blocks on it."""
        def drain() -> None:
            with contextlib.suppress(OSError, ValueError):
                while os.read(self._stdout.fileno(), 65536):
                    pass
        threading.Thread(target=drain, name=f"drain-{self.name}", daemon=True).start()

    def interrupt(self, timeout: float = 30.0) -> int | None:
        """SIGINT (e.g. py-spy writes its output then), wait; then `stop`."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        return self.stop()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} died (rc={self.proc.returncode}){self._tail()}")

    def _tail(self) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
        return f"\n--- {self.name} stderr (tail) ---\n{text}" if text.strip() else ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask politely (stdin EOF, then SIGTERM), then SIGKILL; returns the exit code."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._selector.close()
        with contextlib.suppress(OSError):
            self._stdout.close()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """A list to put children in; all of them are stopped on the way out, even on error."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def start_vocalink(data_dir: Path, log_dir: Path, env: dict[str, str]) -> Child:
    """``python -m vocalink_lab serve`` on 127.0.0.1:0; its URL is read from its first line."""
    child = Child(
        "vocalink",
        [PYTHON, "-m", "vocalink_lab", "serve", "--host", "127.0.0.1", "--port", "0",
         "--data-dir", str(data_dir)],
        log_path=log_dir / "vocalink.log",
        env={**LOOPBACK_ENV, **env},
    )
    return child


def serve_and_run(prefix: str, env: dict[str, str],
                  run: Callable[[str, Path], Awaitable[bool]]) -> int:
    """``run(url, workdir)`` against a `vocalink serve` child in a fresh temporary folder.

    Returns
    -------
    int
        The exit status: 0 when ``run`` says its goals hold, 1 when not, 130 on Ctrl-C.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with children() as started, contextlib.suppress(KeyboardInterrupt):
            server = start_vocalink(workdir / "data", workdir, env)
            started.append(server)
            url = read_url(server)
            return 0 if asyncio.run(run(url, workdir)) else 1
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def read_url(child: Child, timeout: float = 30.0) -> str:
    """The first stdout line of a server child: its ``http://127.0.0.1:PORT`` URL.

    ``vocalink serve`` prints it with ``/?token=...`` (as Jupyter does); that is cut off.
    """
    url = child.readline(timeout).split("/?", 1)[0]
    if not url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"{child.name}: expected a loopback URL, got {url!r}")
    child.drain_stdout()
    return url


def start_py_spy(server: Child, out: Path, log_path: Path, rate: int = 1000) -> Child:
    """Sample the server with py-spy (collapsed stacks in ``out``) until interrupted."""
    exe = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--py-spy needs py-spy (pip install py-spy)")
    profiler = Child("py-spy", [exe, "record", "--pid", str(server.pid),
                                "--rate", str(rate), "--format", "raw",
                                "--output", str(out.resolve())],
                     log_path=log_path)
    profiler.drain_stdout()
    time.sleep(1.0)  # let it attach
    return profiler


def http_json(url: str, method: str = "GET", body: object = None) -> Any:
    """One JSON request to a vocalink server on loopback, with the token; its parsed answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, data=data,
                                     headers={**AUTH, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def fetch(url: str) -> bytes:
    """One authenticated GET on loopback; the body."""
    request = urllib.request.Request(url, headers=AUTH)
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
        return bytes(response.read())


def agent_true_start(url: str, recording: dict[str, Any], agent: Any, period_s: float
                     ) -> float:
    """A simulated agent's recording: true time of its first sample, from its clicks.

    Blocking (it downloads and decodes): run it in a thread.

    Parameters
    ----------
    url : str
        The server.
    recording : dict
        Its catalog row.
    agent : Agent
        The simulated device that made it (its clock maps device to true time).
    period_s : float
        The click track's period.
    """
    import io

    import soundfile as sf

    from vocalink_lab.agent.clicktrack import click_start

    samples, rate = sf.read(io.BytesIO(fetch(f"{url}/api/audio/{recording['id']}")))
    near = agent.clock.true_time(recording["params"]["device_started_at"])
    return click_start(samples, rate * agent.clock.rate, period_s=period_s, near=near)


async def call(url: str, method: str = "GET", body: object = None) -> Any:
    """`http_json` in a thread: devices simulated on the caller's loop keep answering."""
    return await asyncio.to_thread(http_json, url, method, body)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, columns right-aligned but for the first."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


# -- WAV files and memory, for the upload benchmarks ---------------------------------------

MiB = 2**20
WAV_RATE = 48_000
WAV_CHANNELS = 2


@dataclass(frozen=True)
class WavFile:
    path: Path
    frames: int
    size: int
    sha256: str


def make_wav(path: Path, size_mib: float) -> WavFile:
    """A WAV file with ``size_mib`` MiB of PCM (a tone with a little noise), written in blocks."""
    frame_bytes = WAV_CHANNELS * 2
    frames = int(size_mib * MiB) // frame_bytes
    t = np.arange(WAV_RATE) / WAV_RATE
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.01 * rng.standard_normal((t.size, 2))
    block = (tone * 32767).astype("<i2").tobytes()  # one second, stereo
    with wave.open(str(path), "wb") as w:
        w.setnchannels(WAV_CHANNELS)
        w.setsampwidth(2)
        w.setframerate(WAV_RATE)
        w.setnframes(frames)  # the header is right from the start: no rewrite at close
        left = frames * frame_bytes
        while left:
            data = block[:min(left, len(block))]
            w.writeframesraw(data)
            left -= len(data)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            digest.update(chunk)
    return WavFile(path, frames, path.stat().st_size, digest.hexdigest())


class RssSampler:
    """A process's RSS every ``interval_s`` in a thread: the peak overall and since `mark`."""

    def __init__(self, pid: int, interval_s: float) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.start_rss = self.process.memory_info().rss
        self.peak = self.window_peak = self.last = self.start_rss
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def mark(self) -> None:
        with self._lock:
            self.window_peak = self.last

    def window(self) -> int:
        """The peak since `mark` (sampling once more first)."""
        self._sample()
        with self._lock:
            peak: int = self.window_peak
        return peak

    def _sample(self) -> None:
        rss = self.process.memory_info().rss
        with self._lock:
            self.last = rss
            self.peak = max(self.peak, rss)
            self.window_peak = max(self.window_peak, rss)
            self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()
