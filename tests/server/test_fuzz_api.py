"""Schemathesis fuzzes a real server against its own OpenAPI document.

The server runs on 127.0.0.1, port 0, on an event loop of its own in a thread (the
fuzzer's HTTP client is synchronous), with one recording stored under the document's
example id and a (fake) device connected under its, so that the examples reach the
success paths too. For every operation, Hypothesis generates valid and invalid requests
from the document (the examples, coverage and fuzzing phases), bounded (`MAX_EXAMPLES`)
and reproducible: a fixed seed and no example database, so CI sends the same requests
every run (``VOCALINK_FUZZ_SEED=n`` explores others). Every response must be no 5xx,
have a documented status, its documented content type and headers, a JSON body that
matches its schema, and every error the one shape; a job it starts (enhance, merge) must
not end in a server error either.

Not fuzzed: the WebSocket routes (``/ws/events``, ``/ws/control``). A valid handshake
switches the connection to WebSocket, which the fuzzer's HTTP client cannot follow;
their refusals are covered by ``test_error_shape.py`` and ``test_ws.py``. The tus
``PATCH`` body is fuzzed as bytes (`OFFSET_TYPE` is serialized as
``application/octet-stream``), against a fresh upload whenever the case names the
document's example upload.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import fast_settings
from tests.support.audio import encode
from tests.support.device import FakeDevice
from tests.support.errors import assert_error_shape
from tests.support.http import auth_headers, multipart_body
from tests.support.wait import wait_until
from vocalink_lab.server import Server
from vocalink_lab.server.openapi import openapi_document
from vocalink_lab.server.tus import OFFSET_TYPE

pytestmark = [
    pytest.mark.slow,
    # Schemathesis's own strategies use `random` (its issue, not ours).
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

#: Bounds the run: examples per operation in the fuzzing phase (the examples and
#: coverage phases add their own, fixed, cases).
MAX_EXAMPLES = 50
SEED = int(os.environ.get("VOCALINK_FUZZ_SEED", "20240612"))
#: What the document's examples name: a recording stored, a device connected (a fake one,
#: which ACKs every command), an upload (made fresh for each case that names it).
EXAMPLE_RECORDING = "rec-1"
EXAMPLE_DEVICE = "mic-1"
EXAMPLE_UPLOAD = "0" * 32
JOB_ROUTES = ("/api/audio/merge", "/api/audio/{recording_id}/enhance",
              "/api/audio/{recording_id}/transcribe", "/api/takes/{take_id}/transcribe")


@pytest.fixture(autouse=True)
def verify_threads_ended() -> Iterator[None]:
    """In place of conftest's check after each test: the server here lives for the module
    (its catalog starts read threads as it needs them); `live_server` checks, once it has
    stopped, that every thread it started has ended."""
    yield


def _vocalink_threads() -> set[int | None]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("vocalink-")}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A started server on its own loop and thread; yields its base URL."""
    before = _vocalink_threads()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server-loop", daemon=True)
    thread.start()
    # DSP jobs (enhance, merge) run in a thread: no process pool to spawn on 2 cores.
    executor = ThreadPoolExecutor(max_workers=1)
    server = Server(fast_settings(tmp_path_factory.mktemp("fuzz") / "data"),
                    executor=executor)

    def run(coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    async def connect() -> FakeDevice:
        return await FakeDevice(server.ws_url, EXAMPLE_DEVICE).__aenter__()

    run(server.start())
    device = None
    try:
        device = run(connect())
        body, ctype = multipart_body(encode("wav", seconds=0.2),
                                     recording_id=EXAMPLE_RECORDING, device_id=EXAMPLE_DEVICE)
        stored = requests.post(f"{server.url}/api/audio/upload", data=body,
                               headers={**AUTH, "Content-Type": ctype}, timeout=30)
        assert stored.status_code == 201, stored.text
        yield server.url
    finally:
        if device is not None:
            run(device.close())
        run(server.stop(), timeout=60)
        run(wait_until(lambda: _vocalink_threads() <= before, timeout=10), timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        executor.shutdown()


def error_shape(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every error is the one JSON shape (a HEAD answer has no body to check)."""
    if response.status_code >= 400 and case.method.upper() != "HEAD":
        assert_error_shape(response.json(), response.status_code)


def job_ends_without_a_server_error(ctx: Any, response: schemathesis.Response,
                                    case: schemathesis.Case) -> None:
    """A job the request started ends, and not in a 5xx (a server error, only later)."""
    if response.status_code != 202 or case.path not in JOB_ROUTES:
        return
    url = response.request.url
    assert url is not None
    base = url.split("/api/", 1)[0]
    job_url = f"{base}/api/jobs/{response.json()['id']}"
    job: dict[str, Any] = {}

    def finished() -> bool:
        job.update(requests.get(job_url, timeout=30, headers=AUTH).json())
        return job["state"] in ("succeeded", "failed", "cancelled")

    asyncio.run(wait_until(finished, timeout=60))
    error = job["error"]
    assert error is None or error["status"] < 500, error


def fresh_upload(base_url: str) -> str:
    """A new tus upload of 64 bytes at offset 0; its id."""
    made = requests.post(f"{base_url}/api/audio/uploads", timeout=30, headers={
        **AUTH, "Tus-Resumable": "1.0.0", "Upload-Length": "64"})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, error_shape,
          job_ends_without_a_server_error]

# The document as the server serves it (test_openapi.py checks they are equal), loaded at
# collection: one test per operation. (`schemathesis.pytest.from_fixture`, which would load
# it from the running server, fails with pytest 9.2: it sets `Function._nodeid`, gone.)
CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    "request-timeout": 30,
})
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG).exclude(
    path_regex=r"^/ws/")

AUTH = auth_headers()

# tus PATCH bodies are bytes, as for application/octet-stream.
schemathesis.serializer.alias(OFFSET_TYPE, "application/octet-stream")


@schema.parametrize()
def test_the_server_keeps_its_document(case: schemathesis.Case, live_server: str) -> None:
    upload = None
    if case.path_parameters and case.path_parameters.get("upload_id") == EXAMPLE_UPLOAD:
        # The example id names an upload that exists: each case gets a fresh one, so that
        # HEAD, PATCH and DELETE reach the upload itself, not only the 404.
        upload = case.path_parameters["upload_id"] = fresh_upload(live_server)
    try:
        # Authenticated, as every client of ours is: the routes behind the token are what
        # is fuzzed (tests/server/test_auth.py covers the requests without it).
        case.call_and_validate(base_url=live_server, checks=CHECKS,
                               headers={**AUTH, **(case.headers or {})})
    finally:
        if upload is not None:  # uploads in progress are limited: leave none behind
            requests.delete(f"{live_server}/api/audio/uploads/{upload}", timeout=30,
                            headers={**AUTH, "Tus-Resumable": "1.0.0"})
