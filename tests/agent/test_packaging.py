"""The agent installs and imports without Jupyter, Tornado, librosa or ipywidgets."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
HEAVY = {"tornado", "IPython", "ipykernel", "ipywidgets", "jupyterlab", "jupyter_server",
         "voila", "librosa", "numba", "noisereduce", "pandas", "matplotlib", "av", "multipart",
         "scipy", "sklearn"}


def test_base_dependencies_are_the_agents_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for dep in project["dependencies"]}
    # ifaddr: discovery enumerates interfaces with it (zeroconf needs it anyway).
    assert names == {"websockets", "zeroconf", "ifaddr", "msgspec", "numpy", "soundfile"}
    assert "tornado>=6.4" in project["optional-dependencies"]["server"]


def test_the_agent_and_the_cli_import_nothing_heavy() -> None:
    code = ("import json, sys\n"
            "import vocalink_lab, vocalink_lab.agent, vocalink_lab.cli, vocalink_lab.discovery\n"
            "from vocalink_lab.agent import Agent, simulate_devices\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    loaded = set(json.loads(out))
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
    assert {"websockets", "zeroconf", "msgspec", "numpy", "soundfile"} <= loaded
