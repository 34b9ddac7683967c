"""Every notebook runs top to bottom in a real kernel, with simulated devices, offline.

Each one gets a kernel on this very Python (a kernelspec written for the test), its own
data dir, and the settings of the suite's network namespace: the server on 127.0.0.1,
mDNS off. A cell that raises fails the test with the cell's traceback, and so does a
traceback a background task printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from tests.support.notebook import kernel_specs, outputs, run_notebook
from vocalink_lab.dashboard import NOTEBOOK as PACKAGED_DASHBOARD

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    return kernel_specs(tmp_path_factory.mktemp("kernels"))


def stderr_text(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in outputs(nb)
                   if out.get("output_type") == "stream" and out.get("name") == "stderr")


def test_there_are_the_four_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_analysis.ipynb",
                                          "03_batch_enhancement.ipynb", "dashboard.ipynb"]


@pytest.mark.parametrize("path", [*NOTEBOOKS, PACKAGED_DASHBOARD], ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: clear the outputs before committing"
    assert nb.metadata.kernelspec.name == "python3"


def test_dashboard_notebook_is_the_packaged_one() -> None:
    """One source of truth: notebooks/dashboard.ipynb is a byte copy of the packaged one."""
    assert (NOTEBOOK_DIR / "dashboard.ipynb").read_bytes() == PACKAGED_DASHBOARD.read_bytes(), \
        "copy vocalink_lab/dashboard/dashboard.ipynb to notebooks/dashboard.ipynb"


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_notebook_runs(name: str, tmp_path: Path, kernels: KernelSpecManager) -> None:
    env = {"VOCALINK_DEMO": "1"} if name == "dashboard.ipynb" else {}
    started = time.monotonic()
    nb = run_notebook(nbformat.read(NOTEBOOK_DIR / name, as_version=4), tmp_path, kernels,
                      **env)
    elapsed = time.monotonic() - started
    errors = stderr_text(nb)
    assert "Traceback" not in errors and "exception was never retrieved" not in errors, errors
    data = tmp_path / "data"
    if name == "dashboard.ipynb":
        views = [out for out in outputs(nb) if WIDGET_VIEW in out.get("data", {})]
        assert views, "the dashboard cell displays a widget"
        assert (data / "demo-devices" / "demo-1").is_dir()  # VOCALINK_DEMO=1 started them
    elif name == "03_batch_enhancement.ipynb":
        results = (data / "batch-demo" / "results.csv").read_text().splitlines()
        assert len(results) == 1 + 6 * 4  # header + 6 files x 4 settings
        import pandas as pd

        neural = pd.read_csv(data / "batch-demo" / "neural.csv")
        assert len(neural) == 6 * 4 and neural["error"].isna().all()
        assert set(neural["method"]) == {"auto", "noisereduce", "rnnoise", "deepfilternet"}
    else:
        assert (data / "vocalink.db").is_file()
        lock = data / "vocalink.lock"
        assert not lock.exists() or not lock.read_text(), "the lab was stopped"
        images = [out for out in outputs(nb) if "image/png" in out.get("data", {})]
        assert images, "the plots are shown"
    print(f"{name}: {elapsed:.1f} s")
