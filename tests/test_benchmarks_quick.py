"""Every benchmark's ``--quick`` run goes to its end and prints its table (smoke runs).

They run with authentication on (the suite's ``VOCALINK_TOKEN``), as the benchmarks must.
Whether a speed goal is met is the benchmark's verdict on a quiet machine, never a test's:
a run here must finish, print its table (and a verdict for each goal it judges), and raise
nothing. The list is every ``benchmarks/*.py`` but the helpers (``_*.py``), found on disk,
so that a new benchmark is smoke-run without anyone adding it here. ``hostile.py`` has
its own test (``test_benchmark_hostile.py``), which also checks what it measures.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Benchmarks with a test of their own.
OWN_TEST = {"hostile"}
#: Benchmarks that report figures and judge no goal.
NO_GOALS = {"dashboard"}
BENCHMARKS = sorted(p.stem for p in (REPO / "benchmarks").glob("*.py")
                    if not p.name.startswith("_") and p.stem not in OWN_TEST)
#: A verdict: ``-> PASS``, ``PASS  ...`` at a line's start, `` PASS`` ending a table row,
#: or a goal the quick sizes cannot judge, said so (``goal: ...: not measured (why)``).
VERDICT = re.compile(r"(-> (PASS|FAIL)\b)|(^(PASS|FAIL)\s)|(\s(PASS|FAIL)$)|"
                     r"(^goal: .*: not measured \()", re.MULTILINE)
#: A table's rule: dashes under each column.
RULE = re.compile(r"^-{3,}(\s+-+)+\s*$", re.MULTILINE)


def test_every_benchmark_is_smoke_run() -> None:
    assert {"align", "browser", "dashboard", "discovery", "enhance", "fanout", "sync",
            "upload", "upload_resume"} <= set(BENCHMARKS)


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_quick_run_finishes_and_prints_its_table(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=360, check=False,
    )
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-4000:]
    assert RULE.search(result.stdout), result.stdout[-4000:]
    if name not in NO_GOALS:
        assert VERDICT.search(result.stdout), result.stdout[-4000:]
    # A non-zero status means a goal was judged FAIL, and only that.
    assert result.returncode == 0 or VERDICT.search(result.stdout) and "FAIL" in result.stdout, \
        output[-4000:]
