"""Transcripts from a notebook: a DataFrame by device, files to save, and clear refusals.

In a real kernel (nbclient) whose server runs on the kernel's loop, as a researcher's
does. Without the ``[asr]`` extra (its import blocked in the kernel) or with a model
folder that lacks its files, asking for a transcript reads as one line naming the fix,
and nothing tries the network: an audit hook in the kernel records every connection and
name lookup, and none leaves loopback (the suite runs in a private network namespace
besides, where one would fail).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tests.support.notebook import kernel_specs, run_notebook, stream_text
from tests.support.speech import SENTENCES, speech_wav, word_error_rate

WATCH = """\
import sys
attempts = []
LOCAL = ("127.0.0.1", "localhost", "::1")
def _watch(event, args):
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in LOCAL:
            attempts.append((event, host))
    elif event == "socket.getaddrinfo" and args[0] not in LOCAL:
        attempts.append((event, args[0]))
sys.addaudithook(_watch)
"""
BLOCK_EXTRA = """\
for name in ("faster_whisper", "ctranslate2"):
    sys.modules[name] = None  # as if `vocalink-lab[asr]` were not installed
"""
START = "import vocalink_lab as vl\nlab = await vl.Lab.start()"


@pytest.mark.slow
@pytest.mark.serial
@pytest.mark.parametrize("missing", ["extra", "model"])
def test_a_missing_extra_or_model_reads_as_one_line_and_fetches_nothing(
        tmp_path: Path, missing: str) -> None:
    cells = [WATCH, BLOCK_EXTRA if missing == "extra" else "", START,
             'await lab.transcribe("rec-1")',
             'await lab.transcribe(take_id="take-1", progress=False)',
             "await lab.stop()\nprint(attempts)"]
    env = {"VOCALINK_ASR_MODEL": str(tmp_path)} if missing == "model" else {}
    nb = run_notebook(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(source, metadata={"tags": ["raises-exception"]}
                                  if "transcribe" in source else {})
        for source in cells]), tmp_path, kernel_specs(tmp_path / "kernels"), **env)

    for cell in nb.cells[3:5]:
        [error] = [out for out in cell.outputs if out["output_type"] == "error"]
        assert error["ename"] == "TranscriptionUnavailable"
        [line] = error["traceback"]
        assert line.startswith("TranscriptionUnavailable: ")
        if missing == "extra":
            assert "pip install 'vocalink-lab[asr]'" in line
        else:
            assert "VOCALINK_ASR_MODEL" in line and "model.bin" in line
    assert stream_text(nb.cells[5], "stdout").strip() == "[]"
    assert "Traceback" not in "".join(stream_text(cell) for cell in nb.cells)


@pytest.mark.slow
@pytest.mark.serial
def test_a_researcher_transcribes_a_recording_into_a_dataframe_and_files(
        tmp_path: Path) -> None:
    wav = tmp_path / "talk.wav"
    wav.write_bytes(speech_wav(SENTENCES[:2]))
    cells = [
        START,
        # A recording as a device would send it (the upload route), then its transcript.
        "import tornado.httpclient, uuid\n"
        f"body = open({str(wav)!r}, 'rb').read()\n"
        "boundary = uuid.uuid4().hex\n"
        "form = (f'--{boundary}\\r\\nContent-Disposition: form-data; name=\"recording_id\""
        "\\r\\n\\r\\nrec-1\\r\\n--{boundary}\\r\\nContent-Disposition: form-data; "
        "name=\"file\"; filename=\"talk.wav\"\\r\\n\\r\\n').encode() + body + "
        "f'\\r\\n--{boundary}--\\r\\n'.encode()\n"
        "await tornado.httpclient.AsyncHTTPClient().fetch(lab.url + '/api/audio/upload', "
        "method='POST', body=form, headers={**lab.client.headers, 'Content-Type': "
        "f'multipart/form-data; boundary={boundary}'})",
        "frame = await lab.transcribe('rec-1', language='en', progress=False)\n"
        "print(list(frame.columns))\nprint(frame.attrs['language'])\n"
        "print(' '.join(frame.text))",
        "saved = [await lab.save_transcript(f'talk.{fmt}', 'rec-1') for fmt in "
        "('vtt', 'srt', 'csv', 'json')]\nprint([p.stat().st_size > 0 for p in saved])",
        "await lab.stop()",
    ]
    nb = run_notebook(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(c) for c in cells]), tmp_path,
        kernel_specs(tmp_path / "kernels"))
    columns, language, text = stream_text(nb.cells[2], "stdout").strip().split("\n")
    assert columns == str(["start", "end", "device", "text", "confidence", "device_id",
                           "recording_id"])
    assert language == "en"
    assert word_error_rate(" ".join(SENTENCES[:2]), text) < 0.25
    assert stream_text(nb.cells[3], "stdout").strip() == "[True, True, True, True]"
    assert (tmp_path / "talk.vtt").read_text().startswith("WEBVTT")
    assert "Traceback" not in "".join(stream_text(cell) for cell in nb.cells)
