"""Run ``vocalink serve`` as a real subprocess (for crash and CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


class ServeProcess:
    """``python -m vocalink_lab serve`` on 127.0.0.1, port 0, reading the URL it prints first.

    It advertises on loopback only (``VOCALINK_INTERFACES``), unless ``env`` says otherwise.
    """

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "vocalink_lab", "serve", "--host", "127.0.0.1",
                     "--port", "0", "--data-dir", str(data_dir), *extra]
        self.env = {**os.environ, "VOCALINK_INTERFACES": "127.0.0.1", **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        #: The first line as printed: the URL with ``/?token=...`` (as Jupyter prints it).
        self.printed_url = ""

    def start(self, timeout: float = 30) -> ServeProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=self.env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"serve did not print its URL first: {line!r}\n{err}")
        assert time.monotonic() < deadline
        self.printed_url = line
        self.url = line.split("/?", 1)[0]
        return self

    def wait_for_line(self, start: str, timeout: float = 30) -> str:
        """The first later line of output starting with ``start`` (stripped)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.strip().startswith(start):
                return line.strip()
        raise AssertionError(f"serve printed no line starting with {start!r}")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
