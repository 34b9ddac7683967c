"""Running notebooks in a real kernel (nbclient), with the suite's network settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from vocalink_lab.dashboard import write_kernelspec


def kernel_specs(root: Path) -> KernelSpecManager:
    """A kernelspec on this very Python, written under ``root``."""
    write_kernelspec(root)
    return KernelSpecManager(kernel_dirs=[str(root / "kernels")])


def run_notebook(nb: nbformat.NotebookNode, workdir: Path, kernels: KernelSpecManager,
                 **env: str) -> nbformat.NotebookNode:
    """Execute ``nb`` in ``workdir``: the server on 127.0.0.1, mDNS off, data in ``workdir``.

    A cell that raises fails the run, unless it is tagged ``raises-exception``.
    """
    manager = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=kernels)
    client = NotebookClient(nb, km=manager, timeout=120, startup_timeout=60,
                            allow_errors=False, record_timing=True,
                            resources={"metadata": {"path": str(workdir)}})
    environment = {
        **os.environ,
        "VOCALINK_DATA_DIR": str(workdir / "data"),
        "VOCALINK_HOST": "127.0.0.1",
        "VOCALINK_ADVERTISE": "0",
        "VOCALINK_INTERFACES": "127.0.0.1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        **env,
    }
    client.execute(env=environment)
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """Every output of every code cell, in order."""
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def stream_text(cell: nbformat.NotebookNode, name: str = "stderr") -> str:
    """What one cell wrote to ``stderr`` (or ``stdout``)."""
    return "".join(out.get("text", "") for out in cell.outputs
                   if out.get("output_type") == "stream" and out.get("name") == name)
