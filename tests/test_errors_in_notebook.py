"""A user's mistake reaches a notebook as the package's own error class, in one line.

The server answers in the one JSON error shape with a stable ``code``; the client
turns the code back into its class. These run in a real kernel (nbclient), against a
real server that the notebook starts on its own loop.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import vocalink_lab as vl
from tests.support.notebook import kernel_specs, run_notebook, stream_text

START = "import vocalink_lab as vl\nlab = await vl.Lab.start()"
CAUGHT = """\
try:
    {call}
except vl.{cls} as exc:
    print(type(exc).__name__, exc.status, exc.code, isinstance(exc, vl.NotFound))
"""


@pytest.mark.slow
@pytest.mark.serial
def test_unknown_recording_and_device_raise_their_classes_and_read_as_one_line(
        tmp_path: Path) -> None:
    calls = [
        ('await lab.delete("nope")', "RecordingNotFound"),
        ('await lab.start_recording(["nope"])', "DeviceNotFound"),  # checked by the Lab
        ('await lab.client.request("GET", "/api/clients/nope")', "DeviceNotFound"),  # server
        ('await lab.client.take("nope")', "TakeNotFound"),
        ('await lab.client.job("nope")', "JobNotFound"),
    ]
    cells = [nbformat.v4.new_code_cell(START)]
    cells += [nbformat.v4.new_code_cell(CAUGHT.format(call=call, cls=cls)) for call, cls in calls]
    uncaught = [nbformat.v4.new_code_cell(call, metadata={"tags": ["raises-exception"]})
                for call, _ in calls[:2]]
    cells += [*uncaught, nbformat.v4.new_code_cell("await lab.stop()")]
    nb = run_notebook(nbformat.v4.new_notebook(cells=cells), tmp_path,
                      kernel_specs(tmp_path / "kernels"))

    printed = [stream_text(cell, "stdout").strip() for cell in nb.cells[1:1 + len(calls)]]
    assert printed == [f"{cls} 404 {getattr(vl, cls).code} True" for _, cls in calls]
    shown = [[(out["output_type"], out.get("ename"), out.get("traceback"))
              for out in cell.outputs] for cell in nb.cells[1 + len(calls):-1]]
    assert shown == [
        [("error", "RecordingNotFound", ["RecordingNotFound: no recording with id 'nope'"])],
        [("error", "DeviceNotFound", ["DeviceNotFound: no device 'nope'; known: none yet"])],
    ]
    assert "Traceback" not in "".join(stream_text(cell) for cell in nb.cells)
