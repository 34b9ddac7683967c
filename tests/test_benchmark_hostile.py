"""``benchmarks/hostile.py --quick`` runs to its end and prints its figures.

Only that the figures are there and are numbers: whether they meet the speed goals is the
benchmark's verdict on a quiet machine, never a test's.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER = r"(-?\d+(?:\.\d+)?)"


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.timeout(150)
def test_quick_run_prints_p99_ratio_and_rss_growth() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "hostile.py"), "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"{out[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"

    p99 = re.search(rf"goal: /ping p99 under attack <= 2x idle, none failed: {NUMBER}x "
                    rf"\({NUMBER} ms vs {NUMBER} ms\), {NUMBER} failed", out)
    assert p99 is not None, out
    ratio, attack_ms, idle_ms, _ = (float(g) for g in p99.groups())
    assert all(math.isfinite(v) and v > 0 for v in (ratio, attack_ms, idle_ms)), p99.group(0)

    rss = re.search(rf"goal: server RSS growth < 64 MiB: {NUMBER} MiB \(idle {NUMBER}, "
                    rf"peak {NUMBER}\)", out)
    assert rss is not None, out
    growth, idle_mib, peak_mib = (float(g) for g in rss.groups())
    assert math.isfinite(growth) and idle_mib > 0 and peak_mib >= idle_mib, rss.group(0)

    # The outcomes that are not speed: nothing lost, every attacker closed by the server.
    assert re.search(r"goal: nothing lost: .* -> PASS", out), out
    assert re.search(r"goal: every attacker bounded in time .* 0 never closed -> PASS", out), out
    # The server prints its URL with the token; the benchmark must not pass it on.
    assert os.environ["VOCALINK_TOKEN"] not in out + result.stderr
