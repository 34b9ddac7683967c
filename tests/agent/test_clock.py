"""DeviceClock: wall-clock-like, offset and drifting on demand, invertible."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from vocalink_lab.agent import clock as clock_module
from vocalink_lab.agent.clock import DeviceClock

#: Reading the two clocks back to back pairs them to about a microsecond; a millisecond is
#: the slack allowed (a value's precision, not a duration).
PAIRING_S = 1e-3


@pytest.mark.parametrize("offset_s", [0.0, -3.5])
def test_now_is_wall_time_plus_the_offset(offset_s: float) -> None:
    before = time.time()
    clock = DeviceClock(offset_s=offset_s)
    now = clock.now() - offset_s
    after = time.time()
    assert before - PAIRING_S <= now <= after + PAIRING_S


@pytest.mark.parametrize("drift_ppm", [-250.0, 0.0, 40.0, 100_000.0])
def test_drift_rate(drift_ppm: float) -> None:
    clock = DeviceClock(offset_s=1.0, drift_ppm=drift_ppm)
    m = time.monotonic()
    rate = (clock.from_monotonic(m + 1000.0) - clock.from_monotonic(m)) / 1000.0
    assert rate == pytest.approx(1 + drift_ppm * 1e-6, rel=1e-9)
    assert clock.rate == pytest.approx(1 + drift_ppm * 1e-6, rel=1e-15)


def test_drift_is_visible_in_real_time() -> None:
    clock = DeviceClock(drift_ppm=200_000)  # 20 % fast: large enough to see in 0.2 s
    m0, t0 = time.monotonic(), clock.now()
    time.sleep(0.2)
    m1, t1 = time.monotonic(), clock.now()
    assert (t1 - t0) / (m1 - m0) == pytest.approx(1.2, rel=0.02)


@pytest.mark.parametrize(("offset_s", "drift_ppm"), [(0.0, 0.0), (12.25, -80.0), (-0.4, 500.0)])
def test_to_monotonic_inverts_now(offset_s: float, drift_ppm: float) -> None:
    clock = DeviceClock(offset_s=offset_s, drift_ppm=drift_ppm)
    # Both directions, past and future instants.
    for dt in (-100.0, 0.0, 0.5, 3600.0):
        t = clock.now() + dt
        assert clock.from_monotonic(clock.to_monotonic(t)) == pytest.approx(t, abs=1e-6)
        m = time.monotonic() + dt
        assert clock.to_monotonic(clock.from_monotonic(m)) == pytest.approx(m, abs=1e-6)
    before = time.monotonic()
    at = clock.to_monotonic(clock.now())
    assert before - 1e-6 <= at <= time.monotonic() + 1e-6


def test_to_monotonic_accounts_for_drift() -> None:
    clock = DeviceClock(drift_ppm=1000.0)
    now_m = time.monotonic()
    # 10 device seconds from now are 10 / 1.001 monotonic seconds away.
    later = clock.to_monotonic(clock.from_monotonic(now_m) + 10.0)
    assert later - now_m == pytest.approx(10.0 / 1.001, abs=1e-6)


class FakeTime:
    """The clocks `DeviceClock` reads, and `asyncio.sleep`, under the test's control."""

    def __init__(self) -> None:
        self.mono = 5000.0
        self.wall = 1_700_000_000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.mono += delay
        self.wall += delay


@pytest.mark.asyncio
async def test_sleep_until_waits_the_drift_corrected_delay(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTime()
    monkeypatch.setattr(clock_module, "time", fake)
    monkeypatch.setattr(clock_module, "asyncio", SimpleNamespace(sleep=fake.sleep))
    clock = DeviceClock(offset_s=100.0, drift_ppm=100_000)
    target = clock.now() + 0.11  # 0.1 s of monotonic time at 10 % fast
    await clock.sleep_until(target)
    assert fake.slept == [pytest.approx(0.1, abs=1e-6)]  # the float precision of epoch s
    assert clock.now() == pytest.approx(target, abs=1e-6)
    await clock.sleep_until(clock.now() - 5)  # in the past: no wait at all
    await clock.sleep_until(clock.now())  # now: neither
    assert len(fake.slept) == 1


@pytest.mark.asyncio
async def test_sleep_until_never_wakes_early() -> None:
    clock = DeviceClock(offset_s=100.0, drift_ppm=100_000)
    target = clock.now() + 0.011
    await clock.sleep_until(target)
    assert clock.now() >= target
