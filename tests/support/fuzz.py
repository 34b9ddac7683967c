"""Hypothesis settings shared by the fuzz tests: bounded and reproducible."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from hypothesis import seed, settings

#: ``VOCALINK_FUZZ_SEED=n`` explores other examples; without it, runs are derandomized.
SEED = os.environ.get("VOCALINK_FUZZ_SEED")
_T = TypeVar("_T")


def fuzz(max_examples: int) -> Callable[[_T], _T]:
    """Bounded, reproducible Hypothesis settings (a seed of one's own with the variable)."""
    bounded = settings(max_examples=max_examples, deadline=None, database=None,
                       derandomize=SEED is None)

    def apply(test: _T) -> _T:
        test = bounded(test)  # type: ignore[arg-type]
        return seed(int(SEED))(test) if SEED is not None else test

    return apply
