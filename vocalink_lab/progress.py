"""The progress callback every long piece of work takes (DSP functions, jobs, batches).

Standard library only: the audio lab, the hub's jobs and the agent share it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "span"]

#: Called with the fraction done, from 0.0 to 1.0, as the work goes.
Progress = Callable[[float], None]


def span(progress: Progress | None, start: float, end: float) -> Progress | None:
    """A callback that maps its own 0–1 onto ``start``–``end`` of ``progress``.

    Parameters
    ----------
    progress : callable or None
        The outer callback; ``None`` gives ``None`` (nobody listens).
    start, end : float
        The part of the outer range this piece of work covers.

    Returns
    -------
    callable or None
    """
    if progress is None:
        return None
    outer = progress

    def inner(fraction: float) -> None:
        outer(start + (end - start) * min(max(fraction, 0.0), 1.0))

    return inner
