"""RetryPolicy: the delays are read, never slept; seeded jitter makes them exact."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from vocalink_lab.agent import AgentConfig
from vocalink_lab.retry import RetryPolicy


def first(policy: RetryPolicy, n: int) -> list[float]:
    return list(itertools.islice(policy.delays(), n))


def test_without_jitter_the_delays_double_up_to_the_maximum() -> None:
    policy = RetryPolicy(initial_s=0.2, factor=2.0, maximum_s=5.0, jitter=0.0)
    assert first(policy, 8) == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    assert first(RetryPolicy(initial_s=1.0, factor=1.0, maximum_s=1.0, jitter=0), 3) == \
        [1.0, 1.0, 1.0]


def test_jitter_stays_within_its_fraction_and_is_reproducible_with_a_seed() -> None:
    bases = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0, 10.0]
    got = first(RetryPolicy(rng=random.Random(7)), len(bases))
    for delay, base in zip(got, bases, strict=True):
        assert 0.5 * base <= delay <= 1.5 * base
    assert got == first(RetryPolicy(rng=random.Random(7)), len(bases))
    assert got != first(RetryPolicy(rng=random.Random(8)), len(bases))
    # Exactly what the generator draws: base * uniform(0.5, 1.5), one draw per delay.
    rng = random.Random(7)
    assert got == [base * rng.uniform(0.5, 1.5) for base in bases]


def test_a_fresh_iterator_starts_over() -> None:
    policy = RetryPolicy(jitter=0.0)
    delays = policy.delays()
    assert [next(delays) for _ in range(3)] == pytest.approx([0.2, 0.4, 0.8])
    assert next(policy.delays()) == 0.2  # e.g. after a successful attempt


def test_without_a_random_source_the_shared_generator_jitters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        calls.append((a, b))
        return b

    monkeypatch.setattr(random, "uniform", uniform)
    assert first(RetryPolicy(initial_s=1.0, maximum_s=2.0, jitter=0.25), 3) == [1.25, 2.5, 2.5]
    assert calls == [(0.75, 1.25)] * 3


def test_a_policy_is_a_frozen_value() -> None:
    assert RetryPolicy() == RetryPolicy(rng=random.Random(1))  # the source is not its value
    with pytest.raises(AttributeError):
        RetryPolicy().initial_s = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("kwargs", [
    {"initial_s": 0.0}, {"initial_s": -1.0}, {"initial_s": 2.0, "maximum_s": 1.0},
    {"factor": 0.5}, {"jitter": -0.1}, {"jitter": 1.5}, {"initial_s": float("nan")},
])
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_the_agents_policies_keep_their_numbers(tmp_path: Path) -> None:
    """Reconnection: 0.2 s to 10 s; uploads: 0.5 s to 10 s; both doubling, +-50 % jitter."""
    config = AgentConfig(state_dir=tmp_path)
    reconnect, uploads = config.reconnect_retry, config.upload_retry
    assert (reconnect.initial_s, reconnect.factor, reconnect.maximum_s, reconnect.jitter) == \
        (0.2, 2.0, 10.0, 0.5)
    assert (uploads.initial_s, uploads.factor, uploads.maximum_s, uploads.jitter) == \
        (0.5, 2.0, 10.0, 0.5)
    custom = AgentConfig(state_dir=tmp_path, reconnect_min_s=1.0, reconnect_max_s=30.0,
                         upload_retry_max_s=60.0)
    assert (custom.reconnect_retry.initial_s, custom.reconnect_retry.maximum_s) == (1.0, 30.0)
    assert custom.upload_retry.maximum_s == 60.0
