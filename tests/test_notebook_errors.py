"""In a notebook, a user mistake is one readable line; an internal error keeps its traceback."""

from __future__ import annotations

import pytest


def test_a_user_mistake_reads_as_one_line_in_ipython(capsys: pytest.CaptureFixture[str]) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from vocalink_lab.lab import show_errors_briefly

    shell = InteractiveShell.instance()
    try:
        assert show_errors_briefly()
        shell.run_cell("from vocalink_lab.errors import NotFound, ParameterError, StorageError\n"
                       "raise NotFound(\"no device 'nope'; known: sim-1\")")
        shell.run_cell("raise ParameterError('2 problems', errors=['a is bad', 'b is bad'])")
        shell.run_cell("raise StorageError('disk on fire')")  # a 500: the full traceback
        out = capsys.readouterr()
        text = out.out + out.err
        assert "NotFound: no device 'nope'; known: sim-1" in text
        assert "ParameterError: 2 problems\n  - a is bad\n  - b is bad" in text
        assert "Traceback" in text and "disk on fire" in text
        assert text.count("Traceback") == 1  # only the internal error has one
    finally:
        InteractiveShell.clear_instance()
