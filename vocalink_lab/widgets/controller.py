"""`Controller`: what the panels need of a Lab, and nothing more.

The panels are written against this interface, not against the concrete `Lab`:
its live mirror (`on` and the lists), its identity (`url`, `name`, `info`), the
devices' pairing (`pairing`) and its actions. `vocalink_lab.lab.Lab` satisfies it
(mypy checks this where the Lab builds its dashboard), and so can a stand-in in a
test, a proxy in another process, or a controller of a future kind of server, with no
change to a panel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Controller", "Listener"]

#: A listener gets ``(topic, data)`` on the event loop (topics: `vocalink_lab.protocol.Topic`).
Listener = Callable[[str, Mapping[str, Any]], object]


class Controller(Protocol):
    """A server as the panels see it: a live mirror plus actions (all on one event loop).

    The lists are read from a mirror that the server's events keep current, so
    reading them costs no round trip; `on` calls back when it changes.
    """

    @property
    def url(self) -> str:
        """The server's base URL."""
        ...

    @property
    def name(self) -> str:
        """The server name in use."""
        ...

    @property
    def info(self) -> dict[str, Any]:
        """The server's ``/api/server`` answer as last known (``discovery`` kept live)."""
        ...

    @property
    def pairing(self) -> dict[str, Any]:
        """Devices' pairing as last known.

        ``required`` (bool: authentication is on), ``join_code`` and
        ``join_code_expires_at`` (server time, seconds since 1970; both ``None`` when
        not required), ``pending`` (ids waiting for approval) and ``paired`` (how many
        devices hold a key).
        """
        ...

    def on(self, topics: str | Iterable[str] | None, callback: Listener) -> Callable[[], None]:
        """Call ``callback(topic, data)`` for these topics; returns the unsubscribe function."""
        ...

    def device_list(self) -> list[dict[str, Any]]:
        """Devices, connected first."""
        ...

    def recording_list(self) -> list[dict[str, Any]]:
        """Recordings, newest first."""
        ...

    def take_list(self) -> list[dict[str, Any]]:
        """Takes, newest first."""
        ...

    def job_list(self) -> list[dict[str, Any]]:
        """Jobs seen since the controller started, newest first (``job.updated`` events)."""
        ...

    async def start_recording(self, targets: Sequence[str] | None = None, *,
                              lead_ms: float | None = None, **params: Any) -> dict[str, Any]:
        """START on every device (or ``targets``), at one instant."""
        ...

    async def stop_recording(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """STOP."""
        ...

    async def pause(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """PAUSE."""
        ...

    async def resume(self, targets: Sequence[str] | None = None) -> dict[str, Any]:
        """RESUME."""
        ...

    async def approve(self, device_id: str) -> dict[str, Any]:
        """Let a pending device in (it is paired from now on); the device as listed."""
        ...

    async def reject(self, device_id: str) -> None:
        """Refuse a pending device, or unpair one: it is disconnected and forgotten."""
        ...

    async def new_join_code(self) -> str:
        """Replace the join code (the old one stops working at once); the new one."""
        ...

    async def rename(self, name: str) -> str:
        """Rename the server live; the name in use."""
        ...

    async def enhance(self, recording_id: str, preset: str | None = "auto", *,
                      format: str = "flac", progress: bool = True,
                      **params: Any) -> dict[str, Any]:
        """Enhance into a new recording; its catalog row."""
        ...

    async def merge(self, recording_ids: Sequence[str] | None = None, *,
                    take_id: str | None = None, mode: str = "multichannel",
                    progress: bool = True, **options: Any) -> dict[str, Any]:
        """Merge into a new recording; its catalog row."""
        ...

    async def submit_enhance(self, recording_id: str, preset: str | None = "auto", *,
                             format: str = "flac", **params: Any) -> dict[str, Any]:
        """Start enhancing into a new recording without waiting; the job."""
        ...

    async def submit_merge(self, recording_ids: Sequence[str] | None = None, *,
                           take_id: str | None = None, mode: str = "multichannel",
                           **options: Any) -> dict[str, Any]:
        """Start merging recordings (or a take's originals) without waiting; the job."""
        ...

    async def submit_transcribe(self, recording_id: str | None = None, *,
                                take_id: str | None = None, language: str | None = None,
                                enhance: bool | None = None) -> dict[str, Any]:
        """Start transcribing a recording, or a take by device, without waiting; the job."""
        ...

    async def transcribe(self, recording_id: str | None = None, *, take_id: str | None = None,
                         language: str | None = None, enhance: bool | None = None,
                         progress: bool = True) -> Any:
        """Transcribe and wait; the transcript as a DataFrame (start, end, device, text...)."""
        ...

    async def transcript(self, recording_id: str | None = None, *, take_id: str | None = None,
                         format: str = "frame") -> Any:
        """A stored transcript: a DataFrame, its JSON (``format="json"``) or a file's text."""
        ...

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a job; the job as the server has it then."""
        ...

    async def delete(self, recording_id: str) -> dict[str, Any]:
        """Delete a recording."""
        ...

    async def describe_take(self, take_id: str, *, name: str | None = None,
                            notes: str | None = None) -> dict[str, Any]:
        """Set a take's name and/or notes (``None`` keeps one); the take."""
        ...

    async def delete_take(self, take_id: str) -> None:
        """Delete a stopped take with its recordings (`Conflict` while it records)."""
        ...

    async def download_take(self, take_id: str, target: Path | str) -> Path:
        """Save the take's ZIP (files and manifest) to ``target``; the file written."""
        ...

    def browser_url(self, path: str) -> str:
        """A URL of the server for the user's browser: ``path``, with the token if needed."""
        ...

    async def path_of(self, recording_id: str) -> Path:
        """A local path to the recording's file."""
        ...
