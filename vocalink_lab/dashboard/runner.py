"""``python -m vocalink_lab.dashboard.runner NOTEBOOK [voila options]``: Voila for the dashboard.

Plain Voila, plus one thing: it stops (shutting its kernels down) when the process
that started it goes away, even if that process was killed without a chance to stop
it, so that no Voila and no kernel outlives ``vocalink dashboard``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from . import PAGE_TOKEN_ENV

__all__ = ["main"]


def _watch_parent(parent: int, interval_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(interval_s)
    os.kill(os.getpid(), signal.SIGTERM)  # Voila's handler: stop, shut the kernels down


def main() -> None:
    """Run Voila with ``sys.argv``; stop when the parent process ends.

    With ``VOCALINK_PAGE_TOKEN`` set, the page asks for that token (``?token=`` once, as
    Jupyter does): it is given to Voila here, not on the command line, where any user of
    the machine could read it (``ps``).
    """
    token = os.environ.pop(PAGE_TOKEN_ENV, "")
    if token:
        sys.argv.append(f"--Voila.token={token}")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True,
                     name="vocalink-parent-watch").start()
    from voila.app import main as voila_main

    voila_main()


if __name__ == "__main__":
    main()
