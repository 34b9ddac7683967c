"""How long to wait between attempts: exponential backoff with jitter, in one place.

Standard library only: the device agent (reconnecting, retrying uploads) and the Lab
(following the server's events) share it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``initial_s``, then times ``factor`` each attempt, up to ``maximum_s``.

    Each delay is then multiplied by a random factor in ``[1 - jitter, 1 + jitter]``, so
    that many clients that lost the same server do not all come back at the same instant.

    Attributes
    ----------
    initial_s : float, default 0.2
        The first delay (before jitter), seconds.
    factor : float, default 2.0
        Growth from one delay to the next, ``>= 1``.
    maximum_s : float, default 10.0
        The largest delay before jitter; a jittered delay may exceed it by ``jitter``.
    jitter : float, default 0.5
        Fraction in ``[0, 1]``; 0 gives the same delays every time.
    rng : random.Random, optional
        Where the jitter comes from: the ``random`` module's shared generator if omitted;
        a seeded ``random.Random`` makes `delays` reproducible (tests).

    Examples
    --------
    >>> import itertools, random
    >>> policy = RetryPolicy(initial_s=0.5, maximum_s=4.0, jitter=0.0)
    >>> list(itertools.islice(policy.delays(), 6))
    [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    >>> seeded = RetryPolicy(rng=random.Random(1))
    >>> 0.1 <= next(seeded.delays()) <= 0.3
    True
    """

    initial_s: float = 0.2
    factor: float = 2.0
    maximum_s: float = 10.0
    jitter: float = 0.5
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.maximum_s:
            raise ValueError(f"need 0 < initial_s <= maximum_s, not {self.initial_s} and "
                             f"{self.maximum_s}")
        if not self.factor >= 1:
            raise ValueError(f"factor must be >= 1, not {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be in [0, 1], not {self.jitter}")

    def delays(self) -> Iterator[float]:
        """The delays to wait, one per failed attempt, without end.

        Start a new iterator when an attempt succeeds: the next failure waits
        ``initial_s`` again.

        Yields
        ------
        float
            Seconds to wait before the next attempt.
        """
        base = self.initial_s
        while True:
            yield self.jittered(base)
            base = min(base * self.factor, self.maximum_s)

    def jittered(self, delay: float) -> float:
        """``delay`` times a random factor in ``[1 - jitter, 1 + jitter]``.

        Parameters
        ----------
        delay : float
            Seconds, before jitter.

        Returns
        -------
        float
            ``delay`` itself when ``jitter`` is 0.
        """
        if not self.jitter:
            return delay
        uniform = self.rng.uniform if self.rng is not None else random.uniform
        return delay * uniform(1 - self.jitter, 1 + self.jitter)
